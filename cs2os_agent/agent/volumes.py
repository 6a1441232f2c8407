"""A CloudStack data disk, copied and written into its Cinder volume.

A DATADISK is a qcow2 file on primary storage: standalone, or an overlay
on a template (a data disk made from a data-disk template), possibly with
layers between.  The conductor sends the whole chain, top-down.  Each
file is copied through the transport into the instance directory
(``disk.cs2os-volume-<volume id>-<n>``: resumable, throttled, cancellable
and reported as the root overlay is); the copies are linked to each other
by an unsafe rebase (headers only: each names the next local copy, never
a path a header chose), and ``qemu-img convert`` writes the chain's guest
view into the volume where the domain XML points (volume_target.py).

A volume Cinder just created reads as zeros, so ``--target-is-zero``
lets convert skip every zero and hole: a thin RBD volume stays thin, and
only the data the disk holds is written.  Then ``qemu-img compare`` proves
the volume's guest view equals the chain's (the volume's tail past the
disk's size must read as zeros), and the copies are removed.  A sidecar
(``disk.cs2os-volume-<volume id>.json``) remembers the result, so a
repeated call answers without copying again.
"""

import base64
import json
import os
import tempfile
import time

from oslo_log import log as logging

from cs2os_agent import qcow2
from cs2os_agent import qemu_img
from cs2os_agent.agent import volume_target
from cs2os_agent.common import exception
from cs2os_agent.common import fileutils
from cs2os_agent.transfer import partial as transfer_partial

LOG = logging.getLogger(__name__)

MAX_CHAIN = 18  # the overlay, up to 16 layers and the template


def copy_name(instance_dir, volume_id, n):
    return os.path.join(instance_dir,
                        "disk.cs2os-volume-%s-%d" % (volume_id, n))


def meta_name(instance_dir, volume_id):
    return os.path.join(instance_dir, "disk.cs2os-volume-%s.json"
                        % volume_id)


def read_meta(instance_dir, volume_id, migration_id, fingerprint):
    """The earlier result if this volume was written from this chain."""
    try:
        with open(meta_name(instance_dir, volume_id)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if (meta.get("migration_id") != migration_id
            or meta.get("source") != fingerprint):
        return None
    return meta


FORMATS = ("qcow2", "raw")


def check_format(fmt, chain):
    """qcow2 (a chain of 1 to MAX_CHAIN files) or raw (one image: an RBD
    volume is its whole guest view, no backing file)."""
    if fmt not in FORMATS:
        raise exception.InvalidSource(
            source="chain", reason="format %r is not one of %s"
            % (fmt, ", ".join(FORMATS)))
    if fmt == "raw" and len(chain) != 1:
        raise exception.InvalidSource(
            source="chain", reason="a raw data disk is one image, not %d"
            % len(chain))


def inspect(sources, fmt):
    """(the guest view's size, the chain's headers; None for raw)."""
    if fmt == "raw":
        return sources[0].size(), None
    headers = inspect_chain(sources)
    return headers[0].virtual_size, headers


def inspect_chain(sources):
    """Every file's header, checked before a byte moves: qcow2 and safe
    (qcow2.inspect_header), each above the bottom with a backing file, the
    bottom without one."""
    count = len(sources) if isinstance(sources, (list, tuple)) else 0
    if not 0 < count <= MAX_CHAIN:
        raise exception.InvalidSource(
            source="chain", reason="a data disk's chain has 1 to %d files, "
            "not %d" % (MAX_CHAIN, count))
    headers = []
    for n, src in enumerate(sources):
        header = qcow2.inspect_header(src.read_header(qcow2.HEADER_BYTES),
                                      src.describe())
        bottom = n == len(sources) - 1
        if header.has_backing == bottom:
            raise exception.InvalidSource(
                source=src.describe(), reason=(
                    "the bottom of the chain has a backing file (%s): "
                    "its template is missing from the request"
                    % header.backing_file) if bottom else (
                    "it has no backing file, but %d more file(s) follow "
                    "it in the chain" % (len(sources) - 1 - n)))
        headers.append(header)
    return headers


def copy_chain(sources, headers, instance_dir, volume_id, make_monitor,
               checkpoint_bytes):
    """Copy every file of the chain; (local paths top-down, bytes moved).
    A copy interrupted by a crash resumes where its checkpoint says."""
    copies = [transfer_partial.PartialFile(
        copy_name(instance_dir, volume_id, n),
        copy_name(instance_dir, volume_id, n) + ".part.json",
        src.fingerprint(), checkpoint_bytes)
        for n, src in enumerate(sources)]
    try:
        offsets = [copy.resume_offset() for copy in copies]
        monitor = make_monitor(sum(src.bytes_to_copy(offsets[n])
                                   for n, src in enumerate(sources)))
        copied = 0
        for n, src in enumerate(sources):
            if offsets[n]:
                LOG.info("Resuming the copy of %s at byte %d",
                         src.describe(), offsets[n])
            copies[n].open(offsets[n])
            copied += src.copy_to(copies[n], monitor, offsets[n])
            monitor.check_cancelled()
            copies[n].finish(src.size())
            if headers:  # raw: no header to hold on to
                qcow2.same_header(copies[n].path, headers[n],
                                  "data disk file %d" % n)
    except BaseException:
        for copy in copies:
            copy.discard()
        raise
    monitor.finish()
    return [copy.path for copy in copies], copied


def link_chain(paths):
    """Each copy's backing file: the next local copy (bottom up)."""
    for upper, lower in reversed(list(zip(paths, paths[1:], strict=False))):
        qemu_img.rebase(upper, "qcow2", lower, "qcow2", unsafe=True)
    for path in paths:
        qemu_img.check(path, "qcow2")


def write(top, fmt, virtual_size, target, key_b64):
    """Write ``top``'s guest view into ``target``, zeros skipped; then
    prove the volume shows the same guest view.  (bytes the volume is
    long, seconds writing, seconds comparing)."""
    name, needs_key = volume_target.qemu_target(target)
    with tempfile.TemporaryDirectory(prefix="cs2os-key-") as keydir:
        objects = []
        if needs_key:
            if key_b64 is None:
                raise exception.VolumeNotWritable(
                    volume_id=target.volume_id, instance_uuid="-",
                    reason="no key for cephx user %s" % target.user)
            keyfile = os.path.join(keydir, "key")
            fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                         0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key_b64)
            objects = ["--object", "secret,id=%s,file=%s,format=base64"
                       % (volume_target.SECRET_ID, keyfile)]
        length = qemu_img.target_size(name, target.fmt, objects)
        if length < virtual_size:
            raise exception.VolumeNotWritable(
                volume_id=target.volume_id, instance_uuid="-",
                reason="it is %d bytes, the data disk %d" % (length,
                                                             virtual_size))
        started = time.monotonic()
        qemu_img.convert_into(top, fmt, name, target.fmt, objects,
                              virtual_size,
                              target_is_zero=target.kind == "rbd",
                              out_of_order=target.kind in ("rbd", "block"))
        written = time.monotonic()
        qemu_img.compare_with_objects(top, fmt, name, target.fmt,
                                      objects, virtual_size + length)
    return length, written - started, time.monotonic() - written


def key_for(target, libvirt_host, keyring_dir):
    """The cephx key (base64) of an rbd target's user: its libvirt secret,
    else ``<keyring_dir>/ceph.client.<user>.keyring``."""
    if target.kind != "rbd" or not target.user:
        return None
    if target.secret_uuid:
        raw = libvirt_host.secret_value(target.secret_uuid)
        if raw is not None:
            return base64.b64encode(raw).decode("ascii")
    key = None
    if keyring_dir:
        key = volume_target.keyring_key(keyring_dir, target.user)
    if key is None:
        raise exception.VolumeNotWritable(
            volume_id=target.volume_id, instance_uuid="-",
            reason="libvirt keeps secret %s of cephx user %s private and no "
            "ceph.client.%s.keyring is in [agent] ceph_keyring_dir (%s)"
            % (target.secret_uuid, target.user, target.user,
               keyring_dir or "not set"))
    return key


def remove_copies(instance_dir, volume_id):
    for n in range(MAX_CHAIN):
        for name in (copy_name(instance_dir, volume_id, n),
                     copy_name(instance_dir, volume_id, n) + ".part.json"):
            fileutils.remove_if_exists(name)
