"""Prove D == B before a shallow mirror relies on it.

A shallow block copy sends only the source's top layer A; the target T
reads everything else from Nova's base D.  That is correct only if D shows
the guest exactly the bytes the CloudStack template B shows (the method's
unsafe part).  Two proofs are accepted:

- ``compare``: B is readable here (e.g. primary storage mounted on the
  node, or the conductor's spooled copy): ``qemu-img compare`` of D and B;
- ``digest``: a digest of B's guest-visible bytes (its whole virtual size,
  as raw), recorded where B was read; D is hashed the same way here.  A
  digest of B's *file* (qcow2 bytes, as Glance records) is a different
  thing and proves nothing about D: the request must say ``guest_sha256``
  or ``guest_sha512``.

Anything else is refused (BaseNotVerified); a proof that fails is refused
as BaseMismatch.  No proof is ever assumed.  Only regular files are read:
a template or base that is a FIFO, device node or symlink is refused
(SourceNotRegularFile) before qemu-img or the hash could block on it.
"""

import hashlib
import os
import re

from cs2os_agent import qemu_img
from cs2os_agent.common import exception
from cs2os_agent.transfer import path as path_transport

ALGORITHMS = {"guest_sha256": hashlib.sha256, "guest_sha512": hashlib.sha512}
_HEX = re.compile(r"[0-9a-fA-F]+")
CHUNK = 8 * 1024 * 1024


def guest_digest(path, fmt, algorithm="guest_sha256", size=None):
    """Digest of an image's guest-visible bytes.

    Only raw images are hashed here (Nova's ``_base`` files are raw with
    the default ``force_raw_images``): a raw file *is* its guest view.
    Holes read as zeros, as the guest sees them.  ``size``: the virtual
    size the digest covers; a shorter file is padded with zeros (the guest
    reads zeros past a smaller base), a longer one refused.
    """
    if fmt != "raw":
        raise exception.BaseNotVerified(
            base=path, reason="a digest proof needs a raw base, this one is "
            "%s; give the template to compare with instead" % fmt)
    try:
        digest = ALGORITHMS[algorithm]()
    except KeyError:
        raise exception.BaseNotVerified(
            base=path, reason="unknown digest %r (use one of %s)"
            % (algorithm, ", ".join(sorted(ALGORITHMS)))) from None
    fd, st = path_transport.open_regular(path)
    with os.fdopen(fd, "rb") as f:
        actual = st.st_size
        size = actual if size is None else size
        if actual > size:
            raise exception.BaseMismatch(
                base=path, detail="the base is %d bytes, the template %d"
                % (actual, size))
        # Read in fixed chunks: memory stays flat in the size of D.
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    zeros = bytes(CHUNK)
    left = size - actual
    while left > 0:
        n = min(left, CHUNK)
        digest.update(zeros[:n])
        left -= n
    return digest.hexdigest()


def prove(base, base_format, proof):
    """Check ``proof`` for base D; return how it was proven.

    ``proof`` is one of:
    ``{"template": PATH, "template_format": "qcow2"}`` (compared here), or
    ``{"algorithm": "guest_sha256", "digest": HEX, "virtual_size": N}``.
    Returns ``{"method": "compare" | "digest", ...}`` for the record.
    """
    if not isinstance(proof, dict) or not proof:
        raise exception.BaseNotVerified(
            base=base, reason="no proof was given")
    if "template" in proof:
        template = proof["template"]
        fmt = proof.get("template_format")
        if not isinstance(template, str) or not fmt:
            raise exception.BaseNotVerified(
                base=base, reason="a template proof needs 'template' and "
                "'template_format'")
        # qemu-img would block for good opening a FIFO (its CPU cap never
        # fires while it waits): make sure it is a regular file first.
        fd, _st = path_transport.open_regular(template)
        os.close(fd)
        try:
            # Not strict: a base that ends where the template's zero tail
            # begins is the same disk for the guest; qemu-img compare runs
            # under its data limits (qemu_img.data_limits).
            qemu_img.compare(template, base, fmt, base_format,
                             force_share=True)
        except exception.ImagesDiffer as exc:
            raise exception.BaseMismatch(
                base=base, detail=exc.kwargs.get("detail") or str(exc)
            ) from None
        return {"method": "compare", "template": template}
    algorithm = proof.get("algorithm")
    expected = proof.get("digest")
    size = proof.get("virtual_size")
    if (algorithm not in ALGORITHMS or not isinstance(expected, str)
            or not _HEX.fullmatch(expected)
            or isinstance(size, bool) or not isinstance(size, int)
            or size <= 0):
        raise exception.BaseNotVerified(
            base=base, reason="a digest proof needs 'algorithm' (%s), a "
            "hex 'digest' of the template's guest-visible bytes and its "
            "'virtual_size'" % " or ".join(sorted(ALGORITHMS)))
    actual = guest_digest(base, base_format, algorithm, size)
    if actual != expected.lower():
        raise exception.BaseMismatch(
            base=base, detail="%s %s here, %s recorded for the template"
            % (algorithm, actual, expected))
    return {"method": "digest", "algorithm": algorithm}
