"""Swapping the staged overlay in as Nova's root disk, and back.

Each function is a small sequence of link/rename steps chosen so that an
agent killed between any two of them leaves a state the same function
finishes when it is called again: ``disk`` always exists, and the original
disk is never deleted before ``cleanup``.
"""

import os
import stat

from oslo_log import log as logging

from cs2os_agent.common import exception
from cs2os_agent.common import fileutils

LOG = logging.getLogger(__name__)


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except FileNotFoundError:
        return False


def swap_in(files, instance_uuid):
    """Make the staged overlay ``disk``; keep the old disk as ``orig``.

    Returns ``{"swapped": bool}``: False when an earlier call already did
    it.  The new ``disk`` gets the owner and mode of the disk it replaces,
    since Nova and libvirt expect their own ownership on it.
    """
    if not os.path.exists(files.staged):
        if os.path.exists(files.orig):
            return {"swapped": False}
        raise exception.NothingStaged(
            instance_uuid=instance_uuid, path=files.staged
        )
    current = os.stat(files.disk)
    os.chown(files.staged, current.st_uid, current.st_gid)
    os.chmod(files.staged, stat.S_IMODE(current.st_mode))
    # orig is written once: after a restore and a second swap it must
    # still hold Nova's disk, not the first migrated one.
    if not os.path.exists(files.orig):
        os.link(files.disk, files.orig)
    os.rename(files.staged, files.disk)
    fileutils.fsync_dir(files.instance_dir)
    LOG.info("Instance %s: staged overlay swapped in", instance_uuid)
    return {"swapped": True}


def restore(files, instance_uuid):
    """Put Nova's original disk back; keep the migrated one as staged.

    Keeping it lets a retry swap again without copying; ``cleanup``
    removes it.  Returns ``{"restored": bool}``.
    """
    if not os.path.exists(files.orig):
        return {"restored": False}
    if not _same_file(files.disk, files.orig):
        if os.path.exists(files.staged):
            LOG.warning(
                "Instance %s: a newer staged overlay exists; the swapped-in "
                "disk is discarded by the restore",
                instance_uuid,
            )
        else:
            os.link(files.disk, files.staged)
    os.rename(files.orig, files.disk)
    fileutils.fsync_dir(files.instance_dir)
    LOG.info("Instance %s: original disk restored", instance_uuid)
    return {"restored": True}


def cleanup(files):
    """Remove every file cs2os left in the instance directory."""
    removed = [p for p in files.ours() if fileutils.remove_if_exists(p)]
    if removed:
        fileutils.fsync_dir(files.instance_dir)
    return {"removed": removed}
