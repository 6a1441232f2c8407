"""A warm migration's target, from the request to the staged overlay.

What ``overlay.stage`` is to a copied overlay, this module is to a
mirrored one: ``prepare`` checks a ``prepare_mirror`` request, proves the
base and starts a fresh MirrorTarget; ``finish`` closes it and publishes
T as ``disk.cs2os-staged`` with the same sidecar a copy gets, so that
``swap_disk`` cannot tell the two paths apart.

``running`` is the agent's map of migration id -> MirrorTarget (the
targets this process started).  It is the manager's; the functions here
record and drop targets in it at the points where a retry, ``status`` or
``stop_all`` must see the change.
"""

import os
import time

from oslo_log import log as logging

from cs2os_agent import qemu_img
from cs2os_agent.agent import overlay
from cs2os_agent.agent.mirror import baseproof
from cs2os_agent.agent.mirror import request as mirror_request
from cs2os_agent.agent.mirror import target as mirror_target
from cs2os_agent.common import exception
from cs2os_agent.common import fileutils
from cs2os_agent.transfer import sshcmd

LOG = logging.getLogger(__name__)


def refuse_busy(running, instance_uuid, migration_id):
    """Raise if another migration still exports a target for the instance.

    The manager's per-call lock is released between calls; a mirror runs
    for hours in between, and two would write the same instance dir.
    """
    for other_id, other in list(running.items()):
        if (other.instance_uuid == instance_uuid
                and other_id != migration_id
                and other.state == "exporting"):
            raise exception.MigrationBusy(
                instance_uuid=instance_uuid, owner=other_id,
                migration_id=migration_id)


def prepare(conf, running, migration_id, instance_uuid, files, reference,
            source):
    """Start a fresh target T for ``source``; the prepare_mirror result.

    Everything that can refuse the request runs before anything is
    created; a target an earlier call of this migration left is aborted
    (a retry starts the mirror afresh).
    """
    options = conf.mirror
    req = mirror_request.MirrorRequest.from_dict(source, conf)
    if req.virtual_size > reference.virtual_size:
        raise exception.OverlayTooLarge(
            overlay_size=req.virtual_size,
            disk_size=reference.virtual_size,
        )
    # The unsafe part, before anything is created: a shallow mirror is
    # right only if D shows the template's bytes.
    proof = baseproof.prove(
        reference.base_path, reference.base_format, req.base_proof
    )
    ssh_options = sshcmd.SshOptions.from_conf(conf)
    ssh_options.check_key()
    old = running.pop(migration_id, None)
    if old is not None:
        old.abort()
    os.makedirs(options.run_dir, mode=0o700, exist_ok=True)
    target = mirror_target.MirrorTarget(
        migration_id, files.instance_dir, reference.base_path,
        reference.base_format, req.virtual_size, options.run_dir,
        endpoint=req.endpoint, ssh_options=ssh_options,
        remote_socket_dir=options.remote_socket_dir,
        socket_owner=req.socket_owner, instance_uuid=instance_uuid,
        tunnel_ready_timeout=options.tunnel_ready_timeout,
    )
    description = target.prepare()
    running[migration_id] = target
    return dict(description, instance_uuid=instance_uuid, base_proof=proof)


def finish(running, migration_id, target, files, reference):
    """Close T (durable), check, grow and verify it, stage it.

    A T that fails verification is aborted and forgotten: the conductor
    must prepare a new mirror.  Any other failure keeps the target known,
    so that ``mirror_status`` and ``abort_mirror`` still find it.
    """
    started = time.monotonic()
    closed = target.finish()
    path = target.target_path
    qemu_img.check(path, "qcow2")
    grown = target.virtual_size < reference.virtual_size
    if grown:
        qemu_img.resize(path, "qcow2", reference.virtual_size)
    try:
        checked = overlay.verify(path, reference, checked=not grown)
    except exception.Cs2osException:
        target.abort()
        running.pop(migration_id, None)
        raise
    allocated = qemu_img.allocated_bytes(path, "qcow2")
    result = {
        "migration_id": migration_id,
        "staged_path": files.staged,
        "virtual_size": checked["virtual-size"],
        "source_virtual_size": target.virtual_size,
        "grown": grown,
        "backing_file": reference.base_path,
        "backing_format": reference.base_format,
        "full_copy": False,
        "bytes_copied": allocated,
        "closed_seconds": closed["closed_seconds"],
        "fsync_seconds": closed["fsync_seconds"],
        "seconds": round(time.monotonic() - started, 3),
        "source": {"transport": "mirror",
                   "export": target.export,
                   "prepared_at": target.prepared_at},
    }
    publish(files, path, result)
    running.pop(migration_id, None)
    LOG.info("Migration %s: mirror target staged as %s",
             migration_id, files.staged)
    return dict(result, reused=False)


def publish(files, path, result):
    """T (verified) becomes ``staged`` with its sidecar ``result``, the
    way ``swap_disk`` takes it: the warm and the live mode's last step."""
    os.rename(path, files.staged)
    fileutils.fsync_dir(files.instance_dir)
    overlay.write_meta(files, result)


def stage_fresh(running, migration_id, instance_uuid, files, reference,
                base_proof, virtual_size=None):
    """The live mode's target: D == B proven as for a mirror, then a fresh
    T on D, staged at once (libvirt's migration fills it while the guest
    runs on it).  T has A's ``virtual_size`` (libvirt's disk copy refuses
    a target of another size: "Source and target image have different
    sizes"); the move grows it to Nova's once B runs.  Returns the
    prepare_live_target result.
    """
    size = virtual_size or reference.virtual_size
    if size > reference.virtual_size:
        raise exception.OverlayTooLarge(overlay_size=size,
                                        disk_size=reference.virtual_size)
    refuse_busy(running, instance_uuid, migration_id)
    proof = baseproof.prove(
        reference.base_path, reference.base_format, base_proof
    )
    path = files.mirror
    fileutils.remove_if_exists(path)  # an earlier attempt's, never used
    qemu_img.create(path, "qcow2", size=size,
                    backing_file=reference.base_path,
                    backing_fmt=reference.base_format)
    try:
        checked = overlay.verify(path, reference, virtual_size=size)
    except exception.Cs2osException:
        fileutils.remove_if_exists(path)
        raise
    result = {
        "migration_id": migration_id,
        "staged": files.staged,
        "staged_path": files.staged,
        "virtual_size": checked["virtual-size"],
        "backing_file": reference.base_path,
        "backing_format": reference.base_format,
        "full_copy": False,
        "grow_to": reference.virtual_size,
        "base_proof": proof,
        "source": {"transport": "live"},
    }
    publish(files, path, result)
    LOG.info("Migration %s: live target staged as %s", migration_id,
             files.staged)
    return dict(result, reused=False)


def staged_earlier(files, migration_id):
    """The result of an earlier ``finish`` of this migration, or None."""
    meta = overlay.read_meta(files, migration_id)
    if meta is None or (meta.get("source") or {}).get(
            "transport") != "mirror":
        return None
    return meta


def abort(conf, running, migration_id, files):
    """Stop the target and remove T; True if this process was running it.

    Otherwise (an agent restarted since) the run directory's state file
    names the processes an earlier agent started.
    """
    target = running.pop(migration_id, None)
    if target is not None:
        target.abort()
    else:
        mirror_target.abandon(
            mirror_target.run_dir_for(conf.mirror.run_dir, migration_id),
            files.mirror,
        )
    return target is not None


def stop_all(running):
    """Tear down every target in ``running`` (agent shutdown)."""
    for migration_id in list(running):
        LOG.warning("Migration %s: stopping its mirror target (agent "
                    "shutdown)", migration_id)
        running.pop(migration_id).abort()
