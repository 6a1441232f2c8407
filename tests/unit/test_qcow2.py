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
    assert h == qcow2.Header(virtual_size=64 * MiB, has_backing=False)


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


def qcow2_v2_header(backing, size=64 * MiB):
    """A version 2 header (``compat=0.10``): 72 bytes, then (here) the
    backing file's name, where version 3 keeps its feature bits."""
    header = struct.pack(
        ">4sIQIIQIIQQIIQ",
        b"QFI\xfb", 2, 72, len(backing), 16, size, 0,
        1, 3 * 65536, 65536, 1, 0, 0,
    )
    assert len(header) == 72
    data = bytearray(65536)
    data[:72] = header
    data[72:72 + len(backing)] = backing
    return bytes(data)


def test_a_version_2_overlay_has_no_feature_bits_to_refuse():
    # Byte 79 is where a version 3 header keeps the data-file bit; this
    # name's eighth byte ("d", 0x64) has that bit set.
    backing = b"/mnt/p/dtemplate"
    assert backing[7] & INCOMPAT_DATA_FILE
    h = qcow2.inspect_header(qcow2_v2_header(backing), "/v")
    assert h == qcow2.Header(virtual_size=64 * MiB, has_backing=True,
                             backing_file="/mnt/p/dtemplate", version=2)


def test_a_version_3_header_keeps_the_data_file_check():
    # The same bytes as a version 3 header's feature field are refused.
    data = bytearray(qcow2_v2_header(b"/mnt/p/dtemplate"))
    data[4:8] = struct.pack(">I", 3)
    with pytest.raises(exception.UnsafeImage):
        qcow2.inspect_header(bytes(data), "/v")
