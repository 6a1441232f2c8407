"""Read an untrusted qcow2 header before anything else touches the file.

The agent checks a CloudStack overlay with it before staging; the conductor
checks the same header at validation, through the same transport, so a bad
file is refused before any server exists.
"""

import dataclasses
import struct

from oslo_utils.imageutils import format_inspector

from cs2os_agent.common import exception

# The qcow2 header and its extensions sit in the first cluster (64 KiB by
# default, 2 MiB at most); this is enough for the pre-flight inspection.
HEADER_BYTES = 2 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Header:
    virtual_size: int
    has_backing: bool
    # The backing file name the header records, as the CloudStack host
    # sees it: the real chain, never guessed from names.
    backing_file: str = None
    # Internal snapshots (CloudStack VM snapshots on KVM) the file holds.
    snapshots: int = 0
    version: int = 3


def _backing_file_name(data):
    """The backing file name stored in a qcow2 header, or None."""
    offset, size = struct.unpack_from(">QI", data, 8)
    if not offset or not size or offset + size > len(data):
        return None
    return data[offset:offset + size].decode("utf-8", errors="replace")


def _detect(data):
    for name, cls in format_inspector.ALL_FORMATS.items():
        if name == "raw":
            continue
        inspector = cls()
        try:
            inspector.eat_chunk(data)
        except format_inspector.ImageFormatError:
            continue  # a malformed file of that format, or not it at all
        if inspector.format_match:
            return name
    return "raw or unknown"


def _version(data):
    """The header's version field (bytes 4-7, big-endian)."""
    return struct.unpack_from(">I", data, 4)[0]


def _snapshot_count(data):
    """The header's nb_snapshots field (bytes 60-63, big-endian)."""
    return struct.unpack_from(">I", data, 60)[0]


def inspect_header(data, shown_path):
    """Check the first bytes of an untrusted overlay before anything reads it.

    Uses the same format inspector Nova and Glance use against malicious
    images (CVE-2024-32498): qcow2 only, no data-file, no unknown features.
    A backing file is expected and allowed: it is replaced by D.

    A version 2 header (``compat=0.10``, written by older CloudStack KVM
    hosts) has no feature bits at all: it ends at byte 72, where version 3
    keeps its incompatible features and version 2 its header extensions or
    the backing file's name.  The inspector reads the data-file bit there
    anyway (oslo.utils' check_unknown_features knows version 2, its
    check_data_file does not), so for version 2 that one check is dropped;
    the others stand.
    """
    inspector = format_inspector.QcowInspector()
    inspector.eat_chunk(data)
    if not inspector.format_match:
        raise exception.NotQcow2(path=shown_path, detected=_detect(data))
    has_backing = False
    try:
        inspector.safety_check()
    except format_inspector.SafetyCheckFailed as exc:
        failures = dict(exc.failures)
        has_backing = failures.pop("backing_file", None) is not None
        if _version(data) == 2:
            failures.pop("data_file", None)
        if failures:
            raise exception.UnsafeImage(
                path=shown_path,
                reason="; ".join(
                    "%s: %s" % item for item in sorted(failures.items())
                ),
            ) from None
    except format_inspector.ImageFormatError as exc:
        raise exception.ImageCorrupt(path=shown_path, reason=exc) from None
    return Header(
        inspector.virtual_size,
        has_backing,
        _backing_file_name(data) if has_backing else None,
        snapshots=_snapshot_count(data),
        version=_version(data),
    )


def same_header(path, source_header, what="overlay"):
    """The source may have changed after the pre-flight: judge the copy."""
    with open(path, "rb") as f:
        header = inspect_header(f.read(HEADER_BYTES), path)
    if header != source_header:
        raise exception.TransferFailed(
            source=path, dest=path,
            reason="the %s header changed during the copy" % what,
        )
    return header
