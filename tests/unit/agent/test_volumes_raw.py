"""A raw data disk (one RBD image of CloudStack RBD primary storage):
checked, copied without any header and written with ``-f raw``."""

import os

import pytest

from cs2os_agent.agent import volumes
from cs2os_agent.common import exception
from tests.unit.agent.test_volumes import KEY
from tests.unit.agent.test_volumes import RBD
from tests.unit.agent.test_volumes import VOLUME
from tests.unit.agent.test_volumes import Monitor
from tests.unit.agent.test_volumes import qemu  # noqa: F401 - fixture

MiB = 1024 * 1024


class RawSource:
    """An RBD image's bytes: no header at all (a guest's MBR, say)."""

    transport = "rbd"

    def __init__(self, data):
        self.data = data

    def describe(self):
        return "rbd:cloudstack/vol-1"

    def fingerprint(self):
        return {"transport": "rbd", "image": "vol-1", "size": len(self.data)}

    def read_header(self, nbytes):
        raise AssertionError("a raw image has no header to read")

    def size(self):
        return len(self.data)

    def bytes_to_copy(self, offset=0):
        return len(self.data) - offset

    def copy_to(self, partial, monitor, offset=0):
        os.pwrite(partial.fd, self.data[offset:], offset)
        partial.advanced(len(self.data))
        monitor.advance(len(self.data) - offset)
        return len(self.data) - offset


@pytest.mark.parametrize("fmt, chain, words", [
    ("vmdk", [{}], "format 'vmdk' is not one of qcow2, raw"),
    ("raw", [{}, {}], "a raw data disk is one image, not 2"),
])
def test_bad_formats_and_raw_chains_are_refused(fmt, chain, words):
    with pytest.raises(exception.InvalidSource) as info:
        volumes.check_format(fmt, chain)
    assert words in str(info.value)


def test_raw_is_one_image_and_qcow2_any_chain():
    volumes.check_format("raw", [{}])
    volumes.check_format("qcow2", [{}, {}, {}])


def test_a_raw_image_is_its_size_and_has_no_headers():
    source = RawSource(b"\xeb\x63\x90" + bytes(3 * MiB))
    assert volumes.inspect([source], "raw") == (len(source.data), None)


def test_a_raw_copy_is_byte_for_byte_and_never_header_checked(tmp_path):
    source = RawSource(b"MBR!" + bytes(MiB - 4))
    paths, copied = volumes.copy_chain([source], None, str(tmp_path),
                                       VOLUME, Monitor, MiB)
    with open(paths[0], "rb") as f:
        assert f.read() == source.data
    assert copied == MiB


def test_a_raw_disk_is_converted_and_compared_as_raw(qemu):  # noqa: F811
    volumes.write("/i/c0", "raw", 1024 * MiB, RBD, KEY)
    convert, compare = qemu.argvs[1], qemu.argvs[2]
    assert convert[convert.index("-f") + 1] == "raw"
    assert compare[compare.index("-f") + 1] == "raw"
    assert "--target-is-zero" in convert
