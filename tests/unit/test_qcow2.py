"""The pre-flight check on an untrusted overlay's first bytes."""

import struct

import pytest

from cs2os_agent import qcow2
from cs2os_agent.common import exception

MiB = 1024 * 1024
INCOMPAT_DATA_FILE = 1 << 2


def qcow2_header(size=64 * MiB, backing=b"", incompatible=0):
    """A qcow2 v3 header as qemu-img writes it (104 bytes + extensions)."""
    backing_offset = 512 if backing else 0
    header = struct.pack(
        ">4sIQIIQIIQQIIQQQQII",
        b"QFI\xfb", 3, backing_offset, len(backing), 16, size, 0,
        1, 3 * 65536, 65536, 1, 0, 0, incompatible, 0, 0, 4, 104,
    )
    header += struct.pack(">II", 0, 0)  # end of header extensions
    data = bytearray(65536)
    data[:len(header)] = header
    if backing:
        data[backing_offset:backing_offset + len(backing)] = backing
    return bytes(data)


def test_standalone_qcow2():
    h = qcow2.inspect_header(qcow2_header(), "/v")
    assert h == qcow2.Header(virtual_size=64 * MiB,
                                      has_backing=False)


def test_overlay_with_backing_is_allowed():
    h = qcow2.inspect_header(
        qcow2_header(backing=b"/mnt/pool/template"), "/v")
    assert h.has_backing is True
    assert h.backing_file == "/mnt/pool/template"


def test_external_data_file_is_refused():
    with pytest.raises(exception.UnsafeImage, match="data_file"):
        qcow2.inspect_header(
            qcow2_header(incompatible=INCOMPAT_DATA_FILE), "/v")


def test_raw_is_not_qcow2():
    with pytest.raises(exception.NotQcow2, match="raw or unknown"):
        qcow2.inspect_header(b"\0" * 65536, "/v")


def test_unknown_incompatible_feature_is_refused():
    with pytest.raises(exception.UnsafeImage, match="unknown_features"):
        qcow2.inspect_header(qcow2_header(incompatible=1 << 40), "/v")
