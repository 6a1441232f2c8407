"""A chain's layers between the template and the volume.

A chain A -> I1 -> ... -> In -> B (e.g. left by an interrupted volume
snapshot) takes one more step than a plain overlay: the layers are copied
too (:func:`copy`, to ``disk.cs2os-layer-<n>``) and merged into the copy of
A (:func:`merge`), so the template stays D and the layers' data travels
with A's.  overlay.stage drives it.
"""

import os

from oslo_log import log as logging

from cs2os_agent import qcow2
from cs2os_agent import qemu_img
from cs2os_agent.agent import layout
from cs2os_agent.common import exception
from cs2os_agent.common import fileutils

LOG = logging.getLogger(__name__)


def check_count(layers):
    """Refuse a chain with more layers than a stage takes (cheap: before
    any source is opened)."""
    if len(layers) > layout.MAX_LAYERS:
        raise exception.InvalidSource(
            source="layers", reason="%d layers between the template and the "
            "volume; at most %d are supported"
            % (len(layers), layout.MAX_LAYERS))


def requests(layers):
    """``layers`` as a list, refused before anything is opened when it is
    no list or holds more layers than a stage takes."""
    if layers is None:
        return []
    if not isinstance(layers, (list, tuple)):
        raise exception.InvalidSource(
            source="layers", reason="layers must be a list of sources")
    check_count(layers)
    return list(layers)


def chain_fingerprint(source, layers=()):
    """The identity of what a stage copies: ``source``'s fingerprint, plus
    its layers' (top-down) when there are any, so a staged file made from
    one chain is never taken for another's."""
    fingerprint = source.fingerprint()
    if layers:
        fingerprint = dict(fingerprint,
                           layers=[layer.fingerprint() for layer in layers])
    return fingerprint


def inspect(source, header, layers, reference):
    """Check every layer's header before a byte moves; their Headers.

    ``layers`` top-down: the first is the file ``source``'s header names as
    its backing file, each next one the file the one above names.  A
    layer must be a safe qcow2 (qcow2.inspect_header), have a backing file
    of its own (the template is below it), be no larger than the instance
    disk, and be named by the file above it; no file may come twice.
    """
    check_count(layers)
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



def copy(layers, headers, copies, offsets, monitor):
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
        qcow2.same_header(copy.path, headers[n], "layer %d" % n)
    return copied


def merge(files, count, reference, virtual_size, path):
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


def discard(files, copies):
    """Remove the layer copies and their sidecars (any left by an earlier
    stage too)."""
    for copy in copies:
        copy.discard()
    if copies:
        for name in files.layers():
            fileutils.remove_if_exists(name)
