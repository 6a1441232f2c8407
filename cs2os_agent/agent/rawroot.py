"""A root volume that is one raw image, staged as a standalone qcow2.

CloudStack's RBD primary storage keeps a VM's root volume as a raw RBD
image, a clone of its template's snapshot: there is no qcow2 overlay to
rebase onto Nova's base.  The conductor boots the server on the blank
placeholder image (as for a FAT/SPARSE volume), and the agent copies the
image's guest view (the ``rbd`` transport reads the clone's extents and
its parent's under them; holes stay holes), converts it into a qcow2 with
no backing file (zeros become unallocated clusters), grows it to the
instance disk's size and verifies it as overlay.stage does.  The copy is
resumable like an overlay's; the conversion starts over after a crash.
"""

import os
import time

from oslo_log import log as logging

from cs2os_agent import qemu_img
from cs2os_agent.common import exception
from cs2os_agent.common import fileutils
from cs2os_agent.transfer import partial as transfer_partial

LOG = logging.getLogger(__name__)

# What qcow2 metadata may add to a conversion (L1/L2 tables, refcounts).
METADATA_ALLOWANCE = 256 * 1024 * 1024


def stage(source, files, reference, make_monitor, checkpoint_bytes,
          verify):
    """Copy raw ``source`` and publish it as ``staged``; the result dict
    overlay.stage returns.  ``verify``: overlay.verify."""
    size = source.size()
    if size > reference.virtual_size:
        raise exception.OverlayTooLarge(overlay_size=size,
                                        disk_size=reference.virtual_size)
    partial = transfer_partial.PartialFile(
        files.partial, files.partial_meta,
        dict(source.fingerprint(), format="raw"), checkpoint_bytes)
    offset = partial.resume_offset()
    if offset:
        LOG.info("Resuming the copy of %s at byte %d", source.describe(),
                 offset)
    monitor = make_monitor(source.bytes_to_copy(offset))
    started = time.monotonic()
    try:
        partial.open(offset)
        copied = source.copy_to(partial, monitor, offset)
        monitor.check_cancelled()
        partial.finish(size)
        copy_seconds = time.monotonic() - started
        # The conversion is not resumable: a crash from here starts over.
        fileutils.remove_if_exists(files.partial_meta)
        qemu_img.convert(files.partial, "raw", files.converted, "qcow2",
                         virtual_size=size,
                         max_output=size + METADATA_ALLOWANCE)
        if size < reference.virtual_size:
            qemu_img.resize(files.converted, "qcow2",
                            reference.virtual_size)
        info = verify(files.converted, reference)
        os.rename(files.converted, files.staged)
        fileutils.remove_if_exists(files.partial)
        fileutils.fsync_dir(files.instance_dir)
    except BaseException:
        partial.discard()
        fileutils.remove_if_exists(files.converted)
        raise
    monitor.finish()
    return {
        "staged_path": files.staged,
        "bytes_copied": copied,
        "layers_merged": 0,
        "layer_bytes_copied": 0,
        "resumed_at": offset,
        "virtual_size": info["virtual-size"],
        "source_virtual_size": size,
        "grown": size < reference.virtual_size,
        "backing_file": None,
        "backing_format": None,
        "full_copy": True,
        "format": "raw",
        "seconds": round(time.monotonic() - started, 3),
        "copy_seconds": round(copy_seconds, 3),
        "note": "the root volume is a raw image (CloudStack RBD primary "
                "storage): its guest view was copied and converted into a "
                "standalone qcow2",
    }
