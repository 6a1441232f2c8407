"""Fixtures of the transfer tests: the ssh transport's client side.

``conf`` is a stand-in for the agent's configuration holding the
``[transfer]`` options the ssh transport reads, with a key file and a
known_hosts file that exist (and are never read).
"""

import types

import pytest

ROOTS = ["/mnt"]


@pytest.fixture
def keyfiles(tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_text("not a real key; never read by these tests\n")
    key.chmod(0o600)
    known = tmp_path / "known_hosts"
    known.write_text("")
    return str(key), str(known)


@pytest.fixture
def conf(keyfiles):
    key, known = keyfiles
    return types.SimpleNamespace(transfer=types.SimpleNamespace(
        ssh_private_key_file=key,
        ssh_known_hosts_file=known,
        ssh_user="root",
        ssh_connect_timeout=7,
        remote_source_roots=list(ROOTS),
        stall_timeout=30,
        chunk_size_kib=1024,
    ))
