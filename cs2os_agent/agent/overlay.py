"""Inspect, rebase and verify a CloudStack overlay on a compute node.

The method's unsafe step is ``qemu-img rebase -u`` onto Nova's cached base
D: it is correct because D holds the same guest-visible bytes as the
CloudStack template the overlay was made on.  Everything here makes sure
nothing else about the file can surprise Nova or qemu later: the format is
qcow2, no external data file, no larger than the instance disk, and its only
backing file is D.

A chain with layers between the template and the volume takes one more
step (agent/layers.py), and so does a file with internal snapshots
(agent/snapshots.py): only what its current state needs is copied, and the
snapshots are dropped from the copy unless the request keeps them.
"""

import dataclasses
import functools
import json
import os
import threading
import time

from oslo_log import log as logging

from cs2os_agent import qcow2
from cs2os_agent import qemu_img
from cs2os_agent.agent import layers as chain_layers
from cs2os_agent.agent import snapshots
from cs2os_agent.common import exception
from cs2os_agent.common import fileutils
from cs2os_agent.transfer import partial as transfer_partial

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Reference:
    """What a staged overlay must fit: the instance disk and its base D."""

    base_path: str
    base_format: str
    virtual_size: int


def reference_for(files, disk_format, instance_uuid):
    """Read base D and the size Nova gave the root disk.

    After a swap ``disk`` is the migrated overlay, so Nova's original
    (``orig``) is the reference whenever it exists.
    """
    if disk_format != "qcow2":
        raise exception.InstanceDiskNotFound(
            instance_uuid=instance_uuid,
            reason="the root disk is %s, not qcow2; cs2os needs Nova's qcow2 "
            "image backend (images_type = qcow2)" % disk_format,
        )
    path = files.orig if os.path.exists(files.orig) else files.disk
    info = qemu_img.info(path, "qcow2", force_share=True)
    base = info.get("full-backing-filename") or info.get("backing-filename")
    base_format = info.get("backing-filename-format")
    if not base or not base_format:
        raise exception.InstanceDiskNotFound(
            instance_uuid=instance_uuid,
            reason="root disk %s has no backing file with a format; cs2os "
            "needs an image-backed server with use_cow_images = True" % path,
        )
    if not os.path.isfile(base):
        raise exception.InstanceDiskNotFound(
            instance_uuid=instance_uuid,
            reason="base image %s of the root disk is missing" % base,
        )
    return Reference(base, base_format, info["virtual-size"])


def _check_and_info(path):
    """``qemu-img check`` and ``qemu-img info`` of ``path``, side by side.

    Both only read the file, so they run at once: one qemu-img start-up
    less on the way of every staged copy (15-25 ms each, measured).  What
    check finds wins over whatever info says of the same file.  A plain
    thread, not concurrent.futures: that module is imported lazily, and
    its module-wide lock, made on first use inside an RPC worker, was seen
    failing with "release unlocked lock" under two copies at once.
    """
    failures = []

    def check():
        try:
            qemu_img.check(path, "qcow2")
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            failures.append(exc)

    checker = threading.Thread(target=check, name="qemu-img-check",
                               daemon=True)
    checker.start()
    try:
        info = qemu_img.info(path, "qcow2")
    except BaseException:
        checker.join()
        if failures:
            raise failures[0] from None  # a corruption explains it best
        raise
    checker.join()
    if failures:
        raise failures[0]
    return info


def verify(path, reference, checked=False, virtual_size=None):
    """Prove ``path`` is a sound qcow2 Nova can boot as this root disk.

    Returns the ``qemu-img info`` dict.  A standalone image (no backing
    file) is accepted: CloudStack's FAT/SPARSE volumes have none.
    ``checked``: the caller ran ``qemu-img check`` on the file as it is
    now, so it is not run twice.  ``virtual_size``: the size it must have
    when not the instance disk's (a live target, grown once B runs).
    """
    if checked:
        info = qemu_img.info(path, "qcow2")
    else:
        info = _check_and_info(path)
    problems = []
    data = info.get("format-specific", {}).get("data", {})
    if data.get("data-file"):
        problems.append("it has an external data file")
    backing = info.get("full-backing-filename") or info.get(
        "backing-filename"
    )
    if backing and (
        backing != reference.base_path
        or info.get("backing-filename-format") != reference.base_format
    ):
        problems.append(
            "backing file is %s (%s), expected %s (%s)"
            % (
                backing,
                info.get("backing-filename-format"),
                reference.base_path,
                reference.base_format,
            )
        )
    expected = virtual_size or reference.virtual_size
    if info["virtual-size"] != expected:
        problems.append(
            "virtual size is %d, expected %d (the instance disk's is %d)"
            % (info["virtual-size"], expected, reference.virtual_size)
        )
    if problems:
        raise exception.StagedImageInvalid(
            path=path, reason="; ".join(problems)
        )
    return info


def stage(source, files, reference, make_monitor, checkpoint_bytes,
          layers=(), keep_snapshots=False, fmt="qcow2"):
    """Copy ``source`` into the instance dir and publish it as ``staged``.

    The copy lands in ``disk.cs2os-staged.part`` and is renamed to
    ``disk.cs2os-staged`` only after it verified, so a staged file is always
    a finished one.  A copy interrupted by a crash resumes from its last
    durable checkpoint when the source is unchanged.  On any failure but a
    crash the partial file is removed and nothing else in the directory has
    changed.  ``make_monitor(total)`` returns the TransferMonitor.
    ``layers``: the chain's layers below ``source``, top-down (see
    layers.inspect), copied first to ``disk.cs2os-layer-<n>`` (resumable
    as the overlay is), merged into the copy (layers.merge) and removed.
    ``keep_snapshots``: copy the whole file and keep its internal
    snapshots; else only what the current state needs (snapshots.plan).
    ``fmt`` raw: one raw image (agent/rawroot.py), staged standalone.
    """
    if fmt == "raw":
        from cs2os_agent.agent import rawroot  # it verifies with verify()

        return rawroot.stage(source, files, reference, make_monitor,
                             checkpoint_bytes, verify)
    header = qcow2.inspect_header(
        source.read_header(qcow2.HEADER_BYTES), source.describe()
    )
    # Refuse before moving a byte: the size is in the header.
    if header.virtual_size > reference.virtual_size:
        raise exception.OverlayTooLarge(
            overlay_size=header.virtual_size,
            disk_size=reference.virtual_size,
        )
    layer_headers = chain_layers.inspect(source, header, layers, reference)
    if keep_snapshots and header.snapshots:
        snapshots.check_keep(header, reference.virtual_size, layers)
    plan = snapshots.plan(source, header, keep=keep_snapshots)
    skip = {"skip": plan.skip} if plan.skip else {}
    copies = [
        transfer_partial.PartialFile(
            files.layer(n), files.layer_meta(n), layer.fingerprint(),
            checkpoint_bytes)
        for n, layer in enumerate(layers)
    ]
    try:
        layer_offsets = [copy.resume_offset() for copy in copies]
        layer_total = sum(layers[n].bytes_to_copy(offset)
                          for n, offset in enumerate(layer_offsets))
    except BaseException:
        chain_layers.discard(files, copies)
        raise
    # A partial copy with holes where snapshot data was is never resumed
    # as a whole one, nor the other way round.
    partial = transfer_partial.PartialFile(
        files.partial, files.partial_meta,
        dict(source.fingerprint(), **plan.fingerprint_key()),
        checkpoint_bytes,
    )
    offset = partial.resume_offset()
    if offset:
        LOG.info("Resuming the copy of %s at byte %d", source.describe(),
                 offset)
    monitor = make_monitor(source.bytes_to_copy(offset, **skip)
                           + layer_total)
    started = time.monotonic()
    merge = None
    if layers:
        merge = functools.partial(chain_layers.merge, files, len(layers),
                                  reference, header.virtual_size)
    try:
        layer_copied = chain_layers.copy(layers, layer_headers, copies,
                                         layer_offsets, monitor)
        partial.open(offset)
        copied = source.copy_to(partial, monitor, offset, **skip)
        monitor.check_cancelled()
        partial.finish(source.size())
        copy_seconds = time.monotonic() - started
        if plan.drops:
            # The copy changes from here on: a crash starts it over.
            fileutils.remove_if_exists(files.partial_meta)
        info = _adopt(files.partial, header, reference, merge, plan)
        os.rename(files.partial, files.staged)
        fileutils.remove_if_exists(files.partial_meta)
        fileutils.fsync_dir(files.instance_dir)
    except BaseException:
        partial.discard()
        chain_layers.discard(files, copies)
        raise
    monitor.finish()
    elapsed = time.monotonic() - started
    result = {
        "staged_path": files.staged,
        # Every byte moved: the overlay's and its layers' (those alone:
        # layer_bytes_copied), as the progress reports count them.
        "bytes_copied": copied + layer_copied,
        "layers_merged": len(layers),
        "layer_bytes_copied": layer_copied,
        "resumed_at": offset,
        "virtual_size": info["virtual-size"],
        "source_virtual_size": header.virtual_size,
        "grown": header.virtual_size < reference.virtual_size,
        "backing_file": reference.base_path if header.has_backing else None,
        "backing_format": (
            reference.base_format if header.has_backing else None
        ),
        "full_copy": not header.has_backing,
        "seconds": round(elapsed, 3),
        "copy_seconds": round(copy_seconds, 3),
    }
    if result["full_copy"]:
        result["note"] = (
            "the overlay has no backing file (CloudStack FAT/SPARSE "
            "provisioning): it was copied whole and stays standalone"
        )
    if plan.snapshots:
        result["internal_snapshots"] = plan.result()
    return result


def _adopt(path, source_header, reference, merge=None, plan=None):
    """Rebase the finished copy onto D, grow it, verify it; return info.

    ``merge(path)``, for a chain with layers, takes the unsafe rebase's
    place: it folds the layers in and leaves ``path`` on D.  ``plan``
    (snapshots.Plan) says whether its internal snapshots go first.
    """
    header = qcow2.same_header(path, source_header)
    if merge is not None:
        merge(path)
    elif header.has_backing:
        qemu_img.rebase(
            path, "qcow2", reference.base_path, reference.base_format,
            unsafe=True,
        )
    if plan is not None and plan.drops:
        # On D by now: qemu-img opens the backing file to check the image.
        snapshots.drop(path, plan)
    if header.virtual_size < reference.virtual_size:
        # Judge the metadata before resize writes into it: a corrupt image
        # must be reported as corrupt, not as a failed resize.
        qemu_img.check(path, "qcow2")
        qemu_img.resize(path, "qcow2", reference.virtual_size)
    # The only check of a copy that needs no resize (before, it was
    # checked twice, unchanged in between).
    return verify(path, reference)


def staged_size(files, migration_id):
    """The size a staged live target of this migration was made with (A's,
    up to Nova's: the move grows it), or None for any other staged disk."""
    meta = read_meta(files, migration_id) or {}
    if (meta.get("source") or {}).get("transport") != "live":
        return None
    return meta.get("virtual_size")


def read_meta(files, migration_id):
    """The sidecar of ``staged`` if it holds this migration's disk.

    The sidecar is what makes a repeated call cheap: it names the
    migration and the source the staged file was made from.
    """
    if not os.path.exists(files.staged):
        return None
    try:
        with open(files.staged_meta) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if meta.get("migration_id") == migration_id else None


def write_meta(files, result):
    """Record ``result`` next to the staged file, durably."""
    fileutils.write_json_atomic(files.staged_meta, result)
    fileutils.fsync_dir(files.instance_dir)
