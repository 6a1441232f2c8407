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

import os
import re

from cs2os_agent import guestview
from cs2os_agent import qemu_img
from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors
from cs2os_agent.transfer import path as path_transport

ALGORITHMS = guestview.HASHES
_HEX = re.compile(r"[0-9a-fA-F]+")


def guest_digest(path, fmt, algorithm="guest_sha256", size=None):
    """Digest of base D's guest-visible bytes (guestview.digest_raw).

    Only raw bases are hashed here (Nova's ``_base`` files are raw with the
    default ``force_raw_images``).  ``size``: the template's virtual size;
    a base longer than that is not the template's (BaseMismatch).
    """
    if fmt != "raw":
        raise mirror_errors.BaseNotVerified(
            base=path, reason="a digest proof needs a raw base, this one is "
            "%s; give the template to compare with instead" % fmt)
    if algorithm not in ALGORITHMS:
        raise mirror_errors.BaseNotVerified(
            base=path, reason="unknown digest %r (use one of %s)"
            % (algorithm, ", ".join(sorted(ALGORITHMS))))
    try:
        return guestview.digest_raw(path, size, algorithm)
    except exception.GuestViewTooLong as exc:
        raise mirror_errors.BaseMismatch(
            base=path, detail="the base is %d bytes, the template %d"
            % (exc.kwargs["actual"], exc.kwargs["size"])) from None


def prove(base, base_format, proof):
    """Check ``proof`` for base D; return how it was proven.

    ``proof`` is one of:
    ``{"template": PATH, "template_format": "qcow2"}`` (compared here), or
    ``{"algorithm": "guest_sha256", "digest": HEX, "virtual_size": N}``.
    Returns ``{"method": "compare" | "digest", ...}`` for the record.
    """
    if not isinstance(proof, dict) or not proof:
        raise mirror_errors.BaseNotVerified(
            base=base, reason="no proof was given")
    if "template" in proof:
        template = proof["template"]
        fmt = proof.get("template_format")
        if not isinstance(template, str) or not fmt:
            raise mirror_errors.BaseNotVerified(
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
            raise mirror_errors.BaseMismatch(
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
        raise mirror_errors.BaseNotVerified(
            base=base, reason="a digest proof needs 'algorithm' (%s), a "
            "hex 'digest' of the template's guest-visible bytes and its "
            "'virtual_size'" % " or ".join(sorted(ALGORITHMS)))
    actual = guest_digest(base, base_format, algorithm, size)
    if actual != expected.lower():
        raise mirror_errors.BaseMismatch(
            base=base, detail="%s %s here, %s recorded for the template"
            % (algorithm, actual, expected))
    return {"method": "digest", "algorithm": algorithm}
