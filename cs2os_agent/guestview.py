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

The template came from CloudStack: a conversion is bounded before it runs
(:func:`_refuse_bombs`) and while it runs (qemu-img's data limits, the
output's length capped at the virtual size).
"""

import hashlib
import os

from cs2os_agent import qemu_img
from cs2os_agent.common import exception
from cs2os_agent.transfer import path as path_transport

ALGORITHM = "guest_sha256"
# Both name a hash of the guest-visible bytes, never of a qcow2 file.
HASHES = {"guest_sha256": hashlib.sha256, "guest_sha512": hashlib.sha512}
CHUNK = 8 * 1024 * 1024
_ZEROS = bytes(CHUNK)

# A conversion writes every data byte the template's map names, however
# well those bytes compressed; zero clusters and holes cost nothing (the
# raw output is sparse).  A template whose data would expand to more than
# this many times its allocation on disk is refused: real templates'
# clusters compress 2-4x, text-heavy ones ~10x, while a compressed-cluster
# bomb of one repeated byte reaches ~650x (measured: 1 GiB of 0x41 in 1.6
# MiB of zlib clusters).
MAX_EXPANSION = 64
# What the conversion must leave free of its file system, as a share.
KEEP_FREE = 0.05


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


def _open(path):
    """A regular file only (a FIFO would block, a device never end)."""
    fd, st = path_transport.open_regular(path)
    return os.fdopen(fd, "rb"), st


def digest_by_map(path, extents):
    digest = hashlib.sha256()
    f, _st = _open(path)
    with f:
        for extent in extents:
            if extent.get("data") and not extent.get("zero"):
                _hash_range(digest, f, extent["offset"], extent["length"])
            else:
                _hash_zeros(digest, extent["length"])
    return digest.hexdigest()


def digest_raw(path, size=None, algorithm=ALGORITHM):
    """A raw file's bytes (a raw file *is* its guest view), padded with
    zeros to ``size`` (the guest reads zeros past a shorter file); a longer
    file is refused (GuestViewTooLong): its tail is no guest's.  Memory
    stays flat in the size of the file.  Nova's ``_base`` files (the
    agent's D) and a converted template (here) are hashed by this one
    function, so the two digests compare."""
    try:
        digest = HASHES[algorithm]()
    except KeyError:
        raise exception.Invalid(
            reason="unknown guest digest %r (use one of %s)"
            % (algorithm, ", ".join(sorted(HASHES)))) from None
    f, st = _open(path)
    with f:
        size = st.st_size if size is None else size
        if st.st_size > size:
            raise exception.GuestViewTooLong(
                path=path, actual=st.st_size, size=size)
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    _hash_zeros(digest, size - st.st_size)
    return digest.hexdigest()


def _free_bytes(directory):
    """What may still be written to ``directory``'s file system."""
    fs = os.statvfs(directory)
    keep = int(fs.f_blocks * fs.f_frsize * KEEP_FREE)
    return fs.f_bavail * fs.f_frsize - keep


def _refuse_bombs(path, extents, scratch_dir, max_expansion):
    """Refuse a conversion that would write too much; return what it
    writes at most (the data extents of ``qemu-img map``, which follows
    the same block status ``qemu-img convert`` copies by)."""
    expanded = sum(e["length"] for e in extents
                   if e.get("data") and not e.get("zero"))
    allocated = os.stat(path).st_blocks * 512
    reason = None
    if expanded > allocated * max_expansion:
        reason = ("%.1fx its allocation, more than the %dx allowed (a "
                  "compressed-cluster bomb?)"
                  % (expanded / max(allocated, 1), max_expansion))
    else:
        free = _free_bytes(scratch_dir)
        if expanded > free:
            reason = ("%s has %d bytes to spare (keeping %d%% of its file "
                      "system free)"
                      % (scratch_dir, max(free, 0), KEEP_FREE * 100))
    if reason:
        raise exception.ImageExpansionRefused(
            path=path, allocated=allocated, expanded=expanded, reason=reason)
    return expanded


def guest_digest(path, fmt, scratch_dir, max_expansion=MAX_EXPANSION):
    """``{"algorithm", "digest", "virtual_size", "method"}`` for ``path``.

    ``scratch_dir``: where a conversion may write its sparse raw file.
    ``max_expansion``: how many times its allocation a template's data
    may expand to in a conversion (ImageExpansionRefused beyond).
    """
    info = qemu_img.info(path, fmt)
    _check(info, path)
    size = info["virtual-size"]
    extents = qemu_img.map(path, fmt)
    if _readable_by_map(extents):
        value, method = digest_by_map(path, extents), "map"
    else:
        _refuse_bombs(path, extents, scratch_dir, max_expansion)
        raw = os.path.join(scratch_dir, "guest-view.raw")
        try:
            # qemu-img sets the raw file's length to the virtual size at
            # once; RLIMIT_FSIZE at that length keeps every write inside
            # it.  What it allocates inside was bounded just above.
            qemu_img.convert(path, fmt, raw, "raw", virtual_size=size,
                             max_output=size)
            value, method = digest_raw(raw, size), "convert"
        finally:
            try:
                os.unlink(raw)
            except FileNotFoundError:
                pass
    return {"algorithm": ALGORITHM, "digest": value, "virtual_size": size,
            "method": method}
