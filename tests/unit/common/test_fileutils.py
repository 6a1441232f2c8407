"""The O_DIRECT probe, on this machine's real file systems."""

import errno
import os

import pytest

from cs2os_agent.common import fileutils


def _file(tmp_path, size=64 * 1024):
    path = tmp_path / "t.qcow2"
    path.write_bytes(os.urandom(size))
    return str(path)


def test_a_file_on_a_disk_file_system_takes_o_direct(tmp_path):
    # tmp_path is on the root file system (ext4 here), as instance dirs.
    path = _file(tmp_path)
    before = open(path, "rb").read()
    assert fileutils.supports_direct_io(path) is True
    assert open(path, "rb").read() == before  # the probe only reads


def test_a_file_shorter_than_a_block_is_still_probed(tmp_path):
    assert fileutils.supports_direct_io(_file(tmp_path, size=100)) is True


@pytest.mark.parametrize("refused_at", ["open", "read"])
def test_einval_from_open_or_the_first_read_means_no_o_direct(
        tmp_path, monkeypatch, refused_at):
    # Where a file system refuses O_DIRECT (EINVAL); this one does not.
    path = _file(tmp_path)
    real_open = os.open

    def refuse(*args, **kwargs):
        raise OSError(errno.EINVAL, "Invalid argument")

    if refused_at == "open":
        monkeypatch.setattr(os, "open", lambda p, flags, *a: (
            refuse() if flags & os.O_DIRECT else real_open(p, flags, *a)))
    else:
        monkeypatch.setattr(os, "preadv", refuse)
    assert fileutils.supports_direct_io(path) is False


def test_other_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError):
        fileutils.supports_direct_io(str(tmp_path / "absent"))
