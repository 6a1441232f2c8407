"""The digest of a template's guest-visible bytes: what proves D == B.

A warm migration mirrors only the overlay A; the target reads everything
else from Nova's base D.  The agent proves D == B by hashing D (raw: its
file *is* its guest view) and comparing with a digest of B's guest view
taken here.  The SHA-512 the image step records is of B's qcow2 *file*
(Glance's os_hash_value) and says nothing about D's bytes.

B's guest view is read straight from the qcow2 file where ``qemu-img map``
gives a data extent's file offset (uncompressed clusters), and holes and
zero extents are hashed as zeros, so nothing is written.  An image with
extents qemu-img cannot place in the file (compressed clusters) is
converted to a sparse raw file next to it first.  Measured on a 1 GiB
template with 512 MiB of data (page cache, 2 vCPUs): reading by map 1.0
s; conversion 1.7 s plus hashing 0.8 s.  SHA-256 (1.3 GB/s here, SHA
extensions) is used rather than SHA-512 (0.7 GB/s).
"""

import hashlib
import os

from cs2os_agent import qemu_img
from cs2os_agent.common import exception

ALGORITHM = "guest_sha256"
CHUNK = 8 * 1024 * 1024
_ZEROS = bytes(CHUNK)


def _hash_zeros(digest, length):
    while length > 0:
        n = min(length, CHUNK)
        digest.update(_ZEROS[:n])
        length -= n


def _hash_range(digest, f, offset, length):
    while length > 0:
        chunk = os.pread(f.fileno(), min(length, CHUNK), offset)
        if not chunk:
            raise exception.Invalid(
                reason="template file ends before offset %d that qemu-img "
                "map names" % offset)
        digest.update(chunk)
        offset += len(chunk)
        length -= len(chunk)


def _readable_by_map(extents):
    """Every data extent is in the file itself, at a known offset."""
    return all(not e.get("data") or e.get("zero")
               or (e.get("depth") == 0 and "offset" in e)
               for e in extents)


def _check(info, path):
    # Offsets of an encrypted image or one with an external data file
    # point at bytes that are not the guest's (or outside the file).
    problems = []
    if info.get("encrypted"):
        problems.append("it is encrypted")
    data = (info.get("format-specific") or {}).get("data") or {}
    if data.get("data-file"):
        problems.append("it has an external data file")
    if info.get("backing-filename"):
        problems.append("it has a backing file")
    if problems:
        raise exception.Invalid(
            reason="template %s cannot be hashed as a guest view: %s"
            % (path, "; ".join(problems)))


def digest_by_map(path, extents):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for extent in extents:
            if extent.get("data") and not extent.get("zero"):
                _hash_range(digest, f, extent["offset"], extent["length"])
            else:
                _hash_zeros(digest, extent["length"])
    return digest.hexdigest()


def digest_raw(path, size):
    """A raw file's bytes, padded with zeros to ``size``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        actual = os.fstat(f.fileno()).st_size
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    _hash_zeros(digest, size - actual)
    return digest.hexdigest()


def guest_digest(path, fmt, scratch_dir):
    """``{"algorithm", "digest", "virtual_size", "method"}`` for ``path``.

    ``scratch_dir``: where a conversion may write its sparse raw file.
    """
    info = qemu_img.info(path, fmt)
    _check(info, path)
    size = info["virtual-size"]
    extents = qemu_img.map(path, fmt)
    if _readable_by_map(extents):
        value, method = digest_by_map(path, extents), "map"
    else:
        raw = os.path.join(scratch_dir, "guest-view.raw")
        try:
            qemu_img.convert(path, fmt, raw, "raw")
            value, method = digest_raw(raw, size), "convert"
        finally:
            try:
                os.unlink(raw)
            except FileNotFoundError:
                pass
    return {"algorithm": ALGORITHM, "digest": value, "virtual_size": size,
            "method": method}
