"""libvirt's QEMU save-image header (``LibvirtQemudSave``), read and written.

``virDomainRestore`` reads a file that starts with this header, the
domain XML to start QEMU from (and a cookie), then the QEMU migration
stream.  The live move writes one carrying B's live XML into a FIFO and
appends A's live stream (recipes/live-into-nova), so libvirt starts B's
QEMU with B's name and UUID and loads A's state into it.

The layout is libvirt's ``virQEMUSaveHeader`` (src/qemu/qemu_saveimage.h,
libvirt 9.0), version 2, in the host's byte order (little-endian on
x86_64)::

    char     magic[16]      "LibvirtQemudSave"
    uint32   version        2
    uint32   data_len       bytes of XML + NUL + cookie + NUL + padding
    uint32   was_running    1: libvirt resumes the guest after loading
    uint32   compressed     0: raw stream (gzip, xz... are other numbers)
    uint32   cookieOffset   where the cookie starts in the data, 0 = none
    uint32   unused[14]

Only what was verified is handled: version 2, raw, little-endian.  Any
other magic, version or format is refused naming what was found, because
a libvirt that reads it differently would start B from the wrong bytes.
"""

import dataclasses
import struct

from cs2os_agent.agent.live import errors

MAGIC = b"LibvirtQemudSave"
# What libvirt writes first while a save is still under way.
PARTIAL_MAGIC = b"LibvirtQemudPart"
VERSION = 2
RAW = 0
_FIELDS = struct.Struct("<5I")
_UNUSED = 14 * 4
SIZE = len(MAGIC) + _FIELDS.size + _UNUSED  # 92
# Room left after the XML, as libvirt leaves it (save-image-define may
# rewrite the XML in place), and the stream starts on a page boundary.
MIN_PADDING = 1024
ALIGN = 4096
# A domain XML is a few KiB; anything near this is not a header.
MAX_DATA = 16 * 1024 * 1024
_COMPRESSION = {0: "raw", 1: "gzip", 2: "bzip2", 3: "xz", 4: "lzop"}


@dataclasses.dataclass(frozen=True)
class SaveHeader:
    xml: str  # the domain XML libvirt starts QEMU from
    cookie: str = ""  # <cookie><cpu .../></cookie>, or "" for none
    was_running: bool = True
    # Bytes from the file's start to the stream; 0 until parsed or built.
    stream_offset: int = 0

    def to_bytes(self):
        """The header, data and padding; the stream follows these bytes."""
        if not self.xml.strip():
            raise errors.BadSaveHeader(reason="no domain XML to write")
        body = self.xml.strip().encode("utf-8") + b"\0"
        if b"\0" in body[:-1]:
            raise errors.BadSaveHeader(reason="the domain XML holds a NUL")
        cookie_offset = 0
        if self.cookie:
            cookie_offset = len(body)
            body += self.cookie.strip().encode("utf-8") + b"\0"
        padding = MIN_PADDING
        padding += -(SIZE + len(body) + padding) % ALIGN
        body += b"\0" * padding
        fields = _FIELDS.pack(VERSION, len(body), int(self.was_running), RAW,
                              cookie_offset)
        return MAGIC + fields + b"\0" * _UNUSED + body


def parse(data):
    """The header at the start of ``data`` (bytes: at least the header and
    its data_len bytes).  Raises :class:`errors.BadSaveHeader`."""
    magic = bytes(data[:len(MAGIC)])
    if magic == PARTIAL_MAGIC:
        raise errors.BadSaveHeader(
            reason="magic %r: libvirt did not finish writing this image"
            % magic.decode("ascii"))
    if magic != MAGIC:
        raise errors.BadSaveHeader(reason="magic %r, expected %r"
                                   % (magic, MAGIC))
    if len(data) < SIZE:
        raise errors.BadSaveHeader(reason="%d bytes, the header alone is %d"
                                   % (len(data), SIZE))
    version, data_len, was_running, compressed, cookie_offset = \
        _FIELDS.unpack_from(data, len(MAGIC))
    if version != VERSION:
        swapped = struct.unpack("<I", struct.pack(">I", version))[0]
        if swapped == VERSION:
            raise errors.BadSaveHeader(
                reason="version field reads %d: the header is big-endian, "
                "only little-endian is handled" % version)
        raise errors.BadSaveHeader(reason="version %d, only %d is handled"
                                   % (version, VERSION))
    if compressed != RAW:
        raise errors.BadSaveHeader(
            reason="stream format %s (%d), only raw (0) is handled"
            % (_COMPRESSION.get(compressed, "unknown"), compressed))
    if was_running not in (0, 1):
        raise errors.BadSaveHeader(reason="was_running is %d, not 0 or 1"
                                   % was_running)
    if data_len > MAX_DATA or SIZE + data_len > len(data):
        raise errors.BadSaveHeader(
            reason="data_len %d does not fit the %d bytes given (limit %d)"
            % (data_len, len(data) - SIZE, MAX_DATA))
    body = bytes(data[SIZE:SIZE + data_len])
    xml_end = body.find(b"\0")
    if xml_end <= 0:
        raise errors.BadSaveHeader(reason="no NUL-terminated domain XML")
    cookie = ""
    if cookie_offset:
        if cookie_offset < xml_end + 1 or cookie_offset >= data_len:
            raise errors.BadSaveHeader(
                reason="cookieOffset %d is outside the data (XML ends at "
                "%d, data_len %d)" % (cookie_offset, xml_end, data_len))
        cookie_end = body.find(b"\0", cookie_offset)
        if cookie_end < 0:
            raise errors.BadSaveHeader(reason="the cookie has no NUL")
        cookie = _text(body[cookie_offset:cookie_end], "cookie")
    return SaveHeader(xml=_text(body[:xml_end], "domain XML"), cookie=cookie,
                      was_running=bool(was_running),
                      stream_offset=SIZE + data_len)


def _text(raw, what):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.BadSaveHeader(reason="the %s is not UTF-8 (%s)"
                                   % (what, exc)) from None
