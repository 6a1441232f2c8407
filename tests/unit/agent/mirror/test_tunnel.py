"""The mirror's SSH tunnel without ssh: its command line and its checks."""

import shlex

import pytest

from cs2os_agent.agent.mirror import tunnel
from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors
from cs2os_agent.transfer import sshcmd

LOCAL = "/run/cs2os/mirror/0123456789abcdef/nbd.sock"
REMOTE = "/tmp/cs2os-nbd-00112233aabbccdd.sock"


@pytest.fixture
def options(tmp_path):
    return sshcmd.SshOptions(private_key_file="/etc/cs2os/ssh/id_ed25519",
                             known_hosts_file="/etc/cs2os/ssh/known_hosts",
                             connect_timeout=10, stall_timeout=60,
                             chunk_size=1 << 20)


def target(host="kvm-01.example.org", port=2222):
    return sshcmd.SshTarget(host=host, port=port, user="root", path=REMOTE)


def test_argv_is_the_ssh_transports_plus_one_reverse_forward(options):
    argv = tunnel.build_argv(target(), options, LOCAL, REMOTE, "64055:64055")
    base = sshcmd.build_argv(target(), options, "x")
    # Every host key / authentication option of the transport is there.
    for i, word in enumerate(base[:-3]):
        if word == "ClearAllForwardings=yes":
            continue
        if base[i - 1] == "-o" and word.startswith("ClearAll"):
            continue
        assert word in argv, word
    # ...except the one that would clear our forward (ssh keeps the first
    # value of an option, so it must go rather than be overridden).
    assert "ClearAllForwardings=yes" not in argv
    assert "StrictHostKeyChecking=yes" in argv
    assert "UserKnownHostsFile=/etc/cs2os/ssh/known_hosts" in argv
    assert "-F" in argv and argv[argv.index("-F") + 1] == "none"
    assert "BatchMode=yes" in argv and "IdentityAgent=none" in argv
    assert "Ciphers=%s" % sshcmd.CIPHERS in argv
    # Exactly one forward, remote socket -> local socket, before "--".
    assert argv.count("-R") == 1
    r = argv.index("-R")
    assert argv[r + 1] == "%s:%s" % (REMOTE, LOCAL)
    assert "ExitOnForwardFailure=yes" in argv
    assert "-L" not in argv and "-D" not in argv
    assert argv[-3:-1] == ["--", "kvm-01.example.org"]
    assert r < argv.index("--")


def test_remote_script_quotes_and_cleans_up():
    script = tunnel.remote_script(REMOTE, "64055:64055")
    words = shlex.split(script)
    assert words[:5] == ["env", "LC_ALL=C", "test", "-S", REMOTE]
    assert "chown" in words and "64055:64055" in words
    # Ready only after the socket exists and was handed over.
    assert script.index("chown") < script.index("ready")
    # The socket goes whatever happened before.
    assert script.endswith("; env LC_ALL=C rm -f -- %s" % REMOTE)
    assert "chown" not in tunnel.remote_script(REMOTE)


@pytest.mark.parametrize("owner", ["libvirt-qemu:kvm", "0:0;rm", "1:", ":1",
                                   "1", 64055, "1:2:3"])
def test_owner_must_be_numeric(owner):
    with pytest.raises(exception.Invalid):
        tunnel.valid_owner(owner)


def test_owner_accepted():
    assert tunnel.valid_owner("64055:64055") == "64055:64055"
    assert tunnel.valid_owner(None) is None


@pytest.mark.parametrize("path", [
    "relative.sock", "/tmp/a b.sock", "/tmp/a:b.sock", "/tmp/[x].sock",
    "/tmp/../etc/x.sock", "/tmp/x.sock/", "/tmp/%h.sock", "/tmp/~x.sock",
    "/tmp/" + "x" * 120 + ".sock", "/tmp/x\n.sock",
])
def test_socket_paths_ssh_or_the_kernel_would_mangle_are_refused(
        path, options):
    with pytest.raises(exception.Invalid):
        tunnel.ReverseTunnel(tunnel.Endpoint("h", 22, "root"), options,
                             LOCAL, path)


def test_remote_socket_names_are_fresh():
    a = tunnel.remote_socket_path("/tmp")
    b = tunnel.remote_socket_path("/tmp")
    assert a != b and a.startswith("/tmp/cs2os-nbd-")
    assert tunnel.remote_socket_path("/run/x", "ab") == (
        "/run/x/cs2os-nbd-ab.sock")


def test_endpoint_validated_like_the_transport(options):
    with pytest.raises(exception.InvalidSource):
        tunnel.ReverseTunnel(tunnel.Endpoint("-oProxyCommand=x", 22, "root"),
                             options, LOCAL, REMOTE)
    with pytest.raises(exception.InvalidSource):
        tunnel.ReverseTunnel(tunnel.Endpoint("h", 0, "root"), options,
                             LOCAL, REMOTE)


def test_dead_ssh_is_reported_with_the_transports_words(options, tmp_path):
    log = tmp_path / "tunnel.log"
    log.write_text("No ED25519 host key is known for [h]:22 and you have "
                   "requested strict checking.\nHost key verification "
                   "failed.\n")
    t = tunnel.ReverseTunnel(tunnel.Endpoint("h", 22, "root"), options,
                             LOCAL, REMOTE, log_file=str(log))
    err = t._error(255)
    assert isinstance(err, exception.SourceHostKeyUnknown)
    log.write_text("Error: remote port forwarding failed for listen path "
                   "%s\n" % REMOTE)
    err = t._error(255)
    assert isinstance(err, mirror_errors.MirrorTunnelFailed)
    assert "AllowTcpForwarding" in str(err)


def test_check_before_start(options):
    t = tunnel.ReverseTunnel(tunnel.Endpoint("h", 22, "root"), options,
                             LOCAL, REMOTE)
    assert not t.alive()
    with pytest.raises(mirror_errors.MirrorTunnelFailed):
        t.check()
