"""RPC API 1.5: a warm migration's data disks, mirrored into their volumes.

The root disk's mirror is T (``prepare_mirror``, manager.py); each data
disk gets a target of its own that writes straight into the Cinder volume
Nova attached to the stopped server (agent/mirror/volumemirror.py).  The
conductor runs one full block copy per data disk on the source host, cuts
all of them over at once, then calls ``finish_volume_mirror`` (the volume
closed: every write on it) or, on a rollback, ``abort_volume_mirror``
(the daemon and tunnel stopped; the conductor deletes the volume).

Mixed into AgentManager, whose ``_exclusive``, ``_locate``, ``libvirt``
and ``conf`` these use; the targets live in ``_volume_mirrors``
((migration id, volume id) -> VolumeMirrorTarget).
"""

import json
import os
import time

from oslo_log import log as logging
from oslo_utils import uuidutils

from cs2os_agent.agent import volume_target
from cs2os_agent.agent import volumes
from cs2os_agent.agent.mirror import request as mirror_request
from cs2os_agent.agent.mirror import target as mirror_target
from cs2os_agent.agent.mirror import volumemirror
from cs2os_agent.common import exception
from cs2os_agent.common import fileutils
from cs2os_agent.common import mirror_errors
from cs2os_agent.transfer import sshcmd

LOG = logging.getLogger(__name__)


def _meta_name(instance_dir, volume_id):
    return os.path.join(instance_dir,
                        "disk.cs2os-volume-%s.mirror.json" % volume_id)


def _check_volume_id(volume_id):
    if not uuidutils.is_uuid_like(volume_id):
        raise exception.Invalid(
            reason="volume_id %r is not a UUID" % (volume_id,))


class VolumeMirrorEndpoints:
    """The manager's __init__ sets ``_volume_mirrors = {}``."""

    def prepare_volume_mirror(self, context, migration_id, instance_uuid,
                              volume_id, source):
        """Export the volume ``volume_id`` (attached to the stopped
        instance) for the source's block copy of one data disk; ``source``
        as prepare_mirror's, without base_proof (a full copy)."""
        _check_volume_id(volume_id)
        req = mirror_request.MirrorRequest.from_dict(source, self.conf)
        if req.base_proof is not None:
            raise exception.InvalidSource(
                source="mirror", reason="a data disk's mirror is a full "
                "copy: it takes no base_proof")
        with self._exclusive(instance_uuid, migration_id):
            info, _files = self._locate(instance_uuid)
            self._require_shutoff(info, instance_uuid)
            _state, xml = self.libvirt.domain_xml(instance_uuid)
            target = volume_target.find(xml, volume_id, instance_uuid)
            key = volumes.key_for(target, self.libvirt,
                                  self.conf.agent.ceph_keyring_dir)
            ssh_options = sshcmd.SshOptions.from_conf(self.conf)
            ssh_options.check_key()
            old = self._volume_mirrors.pop((migration_id, volume_id), None)
            if old is not None:
                old.abort()  # a retry starts this disk's mirror afresh
            options = self.conf.mirror
            os.makedirs(options.run_dir, mode=0o700, exist_ok=True)
            mirror = volumemirror.VolumeMirrorTarget(
                migration_id, target, key, req.virtual_size, options.run_dir,
                endpoint=req.endpoint, ssh_options=ssh_options,
                remote_socket_dir=options.remote_socket_dir,
                socket_owner=req.socket_owner, instance_uuid=instance_uuid,
                tunnel_ready_timeout=options.tunnel_ready_timeout)
            description = mirror.prepare()
            self._volume_mirrors[(migration_id, volume_id)] = mirror
            LOG.info("Migration %s: %s exported for the mirror of a data "
                     "disk", migration_id, target.describe())
            return dict(description, instance_uuid=instance_uuid)

    def volume_mirror_status(self, context, migration_id, volume_id):
        mirror = self._volume_mirrors.get((migration_id, volume_id))
        if mirror is None:
            raise mirror_errors.MirrorNotFound(migration_id=migration_id)
        return dict(mirror.status(), instance_uuid=mirror.instance_uuid,
                    volume_id=volume_id)

    def finish_volume_mirror(self, context, migration_id, instance_uuid,
                             volume_id):
        """After the cutover (every job ended): close the volume, so that
        it holds every write; idempotent."""
        _check_volume_id(volume_id)
        with self._exclusive(instance_uuid, migration_id):
            _info, files = self._locate(instance_uuid)
            meta = _meta_name(files.instance_dir, volume_id)
            mirror = self._volume_mirrors.get((migration_id, volume_id))
            if mirror is None or mirror.instance_uuid != instance_uuid:
                done = _read_meta(meta, migration_id)
                if done is not None:
                    return dict(done, reused=True)
                raise mirror_errors.MirrorNotFound(migration_id=migration_id)
            started = time.monotonic()
            closed = mirror.finish()
            self._volume_mirrors.pop((migration_id, volume_id), None)
            result = {"migration_id": migration_id, "volume_id": volume_id,
                      "target": mirror.volume.describe(),
                      "target_dev": mirror.volume.target_dev,
                      "virtual_size": mirror.virtual_size,
                      "closed_seconds": closed["closed_seconds"],
                      "seconds": round(time.monotonic() - started, 3),
                      "source": {"transport": "mirror",
                                 "export": mirror.export}}
            fileutils.write_json_atomic(meta, result)
            return dict(result, reused=False)

    def abort_volume_mirror(self, context, migration_id, instance_uuid,
                            volume_id):
        """Stop the daemon and tunnel of a data disk's mirror; idempotent,
        after an agent restart too (the run directory's state file)."""
        _check_volume_id(volume_id)
        with self._exclusive(instance_uuid, migration_id):
            _info, files = self._locate(instance_uuid)
            mirror = self._volume_mirrors.pop((migration_id, volume_id),
                                              None)
            if mirror is not None:
                mirror.abort()
            else:
                mirror_target.abandon(volumemirror.run_dir_for(
                    self.conf.mirror.run_dir, migration_id, volume_id), None)
            fileutils.remove_if_exists(_meta_name(files.instance_dir,
                                                  volume_id))
            return {"migration_id": migration_id, "volume_id": volume_id,
                    "aborted": mirror is not None}

    def stop_volume_mirrors(self):
        """Agent shutdown: their daemons and tunnels would outlive it."""
        for key in list(self._volume_mirrors):
            LOG.warning("Migration %s: stopping the mirror of volume %s "
                        "(agent shutdown)", *key)
            self._volume_mirrors.pop(key).abort()


def _read_meta(path, migration_id):
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if meta.get("migration_id") == migration_id else None
