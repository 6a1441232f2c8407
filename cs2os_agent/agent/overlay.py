"""Inspect, rebase and verify a CloudStack overlay on a compute node.

The method's unsafe step is ``qemu-img rebase -u`` onto Nova's cached base
D: it is correct because D holds the same guest-visible bytes as the
CloudStack template the overlay was made on.  Everything here makes sure
nothing else about the file can surprise Nova or qemu later: the format is
qcow2, no external data file, no larger than the instance disk, and its only
backing file is D.

A chain with layers between the template and the volume (A -> I1 -> ...
-> In -> B, e.g. left by an interrupted volume snapshot) takes one more
step: the layers are copied too and merged into the copy of A (_merge), so
the template stays D and the layers' data travels with A's.
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
from cs2os_agent.agent import layout
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


def verify(path, reference, checked=False):
    """Prove ``path`` is a sound qcow2 Nova can boot as this root disk.

    Returns the ``qemu-img info`` dict.  A standalone image (no backing
    file) is accepted: CloudStack's FAT/SPARSE volumes have none.
    ``checked``: the caller ran ``qemu-img check`` on the file as it is
    now, so it is not run twice.
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
    if info["virtual-size"] != reference.virtual_size:
        problems.append(
            "virtual size is %d, the instance disk's is %d"
            % (info["virtual-size"], reference.virtual_size)
        )
    if problems:
        raise exception.StagedImageInvalid(
            path=path, reason="; ".join(problems)
        )
    return info


def check_layer_count(layers):
    """Refuse a chain with more layers than a stage takes (cheap: before
    any source is opened)."""
    if len(layers) > layout.MAX_LAYERS:
        raise exception.InvalidSource(
            source="layers", reason="%d layers between the template and the "
            "volume; at most %d are supported"
            % (len(layers), layout.MAX_LAYERS))


def chain_fingerprint(source, layers=()):
    """The identity of what a stage copies: ``source``'s fingerprint, plus
    its layers' (top-down) when there are any, so a staged file made from
    one chain is never taken for another's."""
    fingerprint = source.fingerprint()
    if layers:
        fingerprint = dict(fingerprint,
                           layers=[layer.fingerprint() for layer in layers])
    return fingerprint


def inspect_layers(source, header, layers, reference):
    """Check every layer's header before a byte moves; their Headers.

    ``layers`` top-down: the first is the file ``source``'s header names as
    its backing file, each next one the file the one above names.  A
    layer must be a safe qcow2 (qcow2.inspect_header), have a backing file
    of its own (the template is below it), be no larger than the instance
    disk, and be named by the file above it; no file may come twice.
    """
    check_layer_count(layers)
    if not layers:
        return []
    if not header.has_backing:
        raise exception.InvalidSource(
            source=source.describe(),
            reason="the overlay has no backing file, so no layer can lie "
            "below it (%d given)" % len(layers))

    def identity(fingerprint):  # which file, whatever its content
        return tuple(sorted((key, value) for key, value in fingerprint.items()
                            if key not in ("size", "mtime", "mtime_ns")))

    seen = {identity(source.fingerprint()): "the overlay"}
    above, above_header = "the overlay", header
    headers = []
    for n, layer in enumerate(layers):
        name = "layer %d (%s)" % (n, layer.describe())
        layer_header = qcow2.inspect_header(
            layer.read_header(qcow2.HEADER_BYTES), name)
        if not layer_header.has_backing:
            raise exception.InvalidSource(
                source=name,
                reason="it has no backing file; a layer lies between the "
                "template and the volume, so it must name the next file "
                "down the chain")
        if layer_header.virtual_size > reference.virtual_size:
            raise exception.OverlayTooLarge(
                "%s: virtual size %d bytes exceeds the instance disk's %d "
                "bytes" % (name, layer_header.virtual_size,
                           reference.virtual_size),
                overlay_size=layer_header.virtual_size,
                disk_size=reference.virtual_size)
        fingerprint = layer.fingerprint()
        if identity(fingerprint) in seen:
            raise exception.InvalidSource(
                source=name,
                reason="it is the same file as %s" % seen[identity(
                    fingerprint)])
        seen[identity(fingerprint)] = name
        named, path = above_header.backing_file, fingerprint.get("path")
        if named and path and (os.path.basename(named)
                               != os.path.basename(path)):
            raise exception.InvalidSource(
                source=name,
                reason="%s names %s as its backing file, not this file: "
                "layers go top-down, the first one named by the overlay"
                % (above, named))
        headers.append(layer_header)
        above, above_header = name, layer_header
    return headers


def stage(source, files, reference, make_monitor, checkpoint_bytes,
          layers=()):
    """Copy ``source`` into the instance dir and publish it as ``staged``.

    The copy lands in ``disk.cs2os-staged.part`` and is renamed to
    ``disk.cs2os-staged`` only after it verified, so a staged file is always
    a finished one.  A copy interrupted by a crash resumes from its last
    durable checkpoint when the source is unchanged.  On any failure but a
    crash the partial file is removed and nothing else in the directory has
    changed.  ``make_monitor(total)`` returns the TransferMonitor.
    ``layers``: the chain's layers below ``source``, top-down (see
    inspect_layers), copied first to ``disk.cs2os-layer-<n>`` (resumable
    as the overlay is), merged into the copy (_merge) and removed.
    """
    header = qcow2.inspect_header(
        source.read_header(qcow2.HEADER_BYTES), source.describe()
    )
    # Refuse before moving a byte: the size is in the header.
    if header.virtual_size > reference.virtual_size:
        raise exception.OverlayTooLarge(
            overlay_size=header.virtual_size,
            disk_size=reference.virtual_size,
        )
    layer_headers = inspect_layers(source, header, layers, reference)
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
        _discard_layers(files, copies)
        raise
    partial = transfer_partial.PartialFile(
        files.partial, files.partial_meta, source.fingerprint(),
        checkpoint_bytes,
    )
    offset = partial.resume_offset()
    if offset:
        LOG.info("Resuming the copy of %s at byte %d", source.describe(),
                 offset)
    monitor = make_monitor(source.bytes_to_copy(offset) + layer_total)
    started = time.monotonic()
    merge = None
    if layers:
        merge = functools.partial(_merge, files, len(layers), reference,
                                  header.virtual_size)
    try:
        layer_copied = _copy_layers(layers, layer_headers, copies,
                                    layer_offsets, monitor)
        partial.open(offset)
        copied = source.copy_to(partial, monitor, offset)
        monitor.check_cancelled()
        partial.finish(source.size())
        copy_seconds = time.monotonic() - started
        info = _adopt(files.partial, header, reference, merge)
        os.rename(files.partial, files.staged)
        fileutils.remove_if_exists(files.partial_meta)
        fileutils.fsync_dir(files.instance_dir)
    except BaseException:
        partial.discard()
        _discard_layers(files, copies)
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
    return result


def _same_header(path, source_header, what="overlay"):
    """The source may have changed after the pre-flight: judge the copy."""
    with open(path, "rb") as f:
        header = qcow2.inspect_header(f.read(qcow2.HEADER_BYTES), path)
    if header != source_header:
        raise exception.TransferFailed(
            source=path, dest=path,
            reason="the %s header changed during the copy" % what,
        )
    return header


def _copy_layers(layers, headers, copies, offsets, monitor):
    """Copy every layer to its ``disk.cs2os-layer-<n>``; bytes moved."""
    copied = 0
    for n, layer in enumerate(layers):
        copy, offset = copies[n], offsets[n]
        if offset:
            LOG.info("Resuming the copy of layer %d (%s) at byte %d", n,
                     layer.describe(), offset)
        copy.open(offset)
        copied += layer.copy_to(copy, monitor, offset)
        monitor.check_cancelled()
        copy.finish(layer.size())
        _same_header(copy.path, headers[n], "layer %d" % n)
    return copied


def _merge(files, count, reference, virtual_size, path):
    """Fold the layer copies into ``path`` and leave it on D alone.

    First the chain is linked, headers only and bottom up (each backing
    file named already exists and names its own): layer n-1 onto D, each
    layer onto the next, ``path`` onto layer 0.  That is the volume's own
    chain with D for the template (equal guest bytes).  Then a safe rebase
    of ``path`` onto D: qemu-img writes into it every cluster the chain
    above D holds and ``path`` does not, so the guest view is unchanged.
    """
    # From here on the copies change: a crash must start them over, not
    # resume them, so their checkpoints go first.
    for n in range(count):
        fileutils.remove_if_exists(files.layer_meta(n))
    fileutils.remove_if_exists(files.partial_meta)
    below, below_format = reference.base_path, reference.base_format
    for n in reversed(range(count)):
        qemu_img.rebase(files.layer(n), "qcow2", below, below_format,
                        unsafe=True)
        below, below_format = files.layer(n), "qcow2"
    qemu_img.rebase(path, "qcow2", below, below_format, unsafe=True)
    # Judge the metadata before the safe rebase reads and writes it.
    for name in [files.layer(n) for n in range(count)] + [path]:
        qemu_img.check(name, "qcow2")
    # Each cluster ``path`` lacks is read in the old chain and in D.
    qemu_img.rebase(path, "qcow2", reference.base_path,
                    reference.base_format, unsafe=False,
                    reads=2 * virtual_size)
    for name in files.layers():  # with any an earlier stage left
        fileutils.remove_if_exists(name)
    LOG.info("Merged %d layers into %s", count, path)


def _discard_layers(files, copies):
    """Remove the layer copies and their sidecars (any left by an earlier
    stage too)."""
    for copy in copies:
        copy.discard()
    if copies:
        for name in files.layers():
            fileutils.remove_if_exists(name)


def _adopt(path, source_header, reference, merge=None):
    """Rebase the finished copy onto D, grow it, verify it; return info.

    ``merge(path)``, for a chain with layers, takes the unsafe rebase's
    place: it folds the layers in and leaves ``path`` on D.
    """
    header = _same_header(path, source_header)
    if merge is not None:
        merge(path)
    elif header.has_backing:
        qemu_img.rebase(
            path, "qcow2", reference.base_path, reference.base_format,
            unsafe=True,
        )
    if header.virtual_size < reference.virtual_size:
        # Judge the metadata before resize writes into it: a corrupt image
        # must be reported as corrupt, not as a failed resize.
        qemu_img.check(path, "qcow2")
        qemu_img.resize(path, "qcow2", reference.virtual_size)
    # The only check of a copy that needs no resize (before, it was
    # checked twice, unchanged in between).
    return verify(path, reference)


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
