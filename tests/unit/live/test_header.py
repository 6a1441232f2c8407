"""cs2os_agent.agent.live.header: libvirt's save-image header, both ways."""

import struct

import pytest

from cs2os_agent.agent.live import errors
from cs2os_agent.agent.live import header

XML = "<domain type='kvm'><name>instance-1</name><uuid>u2</uuid></domain>"
COOKIE = "<cookie><cpu mode='custom'><model>EPYC</model></cpu></cookie>"


def test_round_trip_keeps_xml_cookie_and_running_flag():
    data = header.SaveHeader(xml=XML, cookie=COOKIE,
                             was_running=False).to_bytes()
    parsed = header.parse(data + b"QEVM")
    assert (parsed.xml, parsed.cookie, parsed.was_running) == (
        XML, COOKIE, False)
    # The stream starts right after what to_bytes wrote, page-aligned.
    assert parsed.stream_offset == len(data)
    assert len(data) % header.ALIGN == 0
    assert (data + b"QEVM")[parsed.stream_offset:] == b"QEVM"


def test_layout_is_libvirts_92_byte_v2_raw_header():
    data = header.SaveHeader(xml=XML, cookie=COOKIE).to_bytes()
    assert data[:16] == b"LibvirtQemudSave"
    version, data_len, running, compressed, cookie_offset = struct.unpack(
        "<5I", data[16:36])
    assert (version, running, compressed) == (2, 1, 0)
    assert data[36:92] == b"\0" * 56
    assert data_len == len(data) - 92
    # the XML, its NUL, then the cookie at cookieOffset, then padding
    assert data[92:92 + len(XML) + 1] == XML.encode() + b"\0"
    assert cookie_offset == len(XML) + 1
    assert data[92 + cookie_offset:].startswith(COOKIE.encode() + b"\0")
    assert data_len - cookie_offset - len(COOKIE) - 1 >= header.MIN_PADDING


def test_no_cookie_writes_offset_zero():
    data = header.SaveHeader(xml=XML).to_bytes()
    assert struct.unpack("<5I", data[16:36])[4] == 0
    assert header.parse(data).cookie == ""


def _with_fields(**changes):
    data = bytearray(header.SaveHeader(xml=XML, cookie=COOKIE).to_bytes())
    names = ["version", "data_len", "was_running", "compressed",
             "cookie_offset"]
    values = list(struct.unpack("<5I", data[16:36]))
    for name, value in changes.items():
        values[names.index(name)] = value
    data[16:36] = struct.pack("<5I", *values)
    return bytes(data)


@pytest.mark.parametrize("data, message", [
    (b"QEVM\0\0\0\3" + b"\0" * 100, "magic b'QEVM"),
    (b"LibvirtQemudPart" + b"\0" * 100, "did not finish writing"),
    (_with_fields(version=3), "version 3, only 2 is handled"),
    (_with_fields(version=1), "version 1, only 2 is handled"),
    (_with_fields(version=0x02000000), "big-endian"),
    (_with_fields(compressed=3), "stream format xz (3), only raw"),
    (_with_fields(compressed=9), "stream format unknown (9)"),
    (_with_fields(was_running=7), "was_running is 7"),
    (_with_fields(data_len=1 << 30), "data_len 1073741824 does not fit"),
    (_with_fields(cookie_offset=3), "cookieOffset 3 is outside"),
    (b"LibvirtQemudSave\2\0", "the header alone is 92"),
])
def test_parse_refuses_naming_what_it_found(data, message):
    with pytest.raises(errors.BadSaveHeader) as exc:
        header.parse(data)
    assert message in str(exc.value)


def test_a_refused_header_is_a_refusal_of_the_move():
    assert issubclass(errors.BadSaveHeader, errors.LiveMoveRefused)


def test_parse_refuses_xml_that_is_not_utf8():
    data = bytearray(header.SaveHeader(xml=XML).to_bytes())
    data[92] = 0xff
    with pytest.raises(errors.BadSaveHeader, match="not UTF-8"):
        header.parse(bytes(data))


@pytest.mark.parametrize("xml", ["", "  ", "<a>\0</a>"])
def test_write_refuses_an_empty_or_nul_xml(xml):
    with pytest.raises(errors.BadSaveHeader):
        header.SaveHeader(xml=xml).to_bytes()
