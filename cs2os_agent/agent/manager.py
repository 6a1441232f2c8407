"""cs2os-agent RPC endpoints: adopt a CloudStack overlay into Nova's disk.

Every method is idempotent: the conductor may repeat any call after a
crash or timeout on either side and gets the same end state.  Work on one
instance is serialised; a second migration touching the same instance is
refused at once rather than queued behind an hour-long copy.
"""

import contextlib
import json
import os
import threading
import time

import oslo_messaging as messaging
from oslo_log import log as logging
from oslo_utils import uuidutils

import cs2os_agent
from cs2os_agent import qemu_img
from cs2os_agent import transfer
from cs2os_agent.agent import domain
from cs2os_agent.agent import layout
from cs2os_agent.agent import overlay
from cs2os_agent.agent import rpcapi
from cs2os_agent.agent import swap
from cs2os_agent.agent.mirror import baseproof
from cs2os_agent.agent.mirror import request as mirror_request
from cs2os_agent.agent.mirror import target as mirror_target
from cs2os_agent.common import exception
from cs2os_agent.common import faultpoints
from cs2os_agent.common import fileutils
from cs2os_agent.common import mirror_errors
from cs2os_agent.conductor import rpcapi as conductor_rpcapi
from cs2os_agent.conf import mirror as mirror_conf
from cs2os_agent.transfer import monitor as transfer_monitor
from cs2os_agent.transfer import ssh as ssh_transport

LOG = logging.getLogger(__name__)


class AgentManager:
    target = messaging.Target(version=rpcapi.RPC_API_VERSION)

    def __init__(self, conf, libvirt_host=None, progress_sink=None):
        self.conf = conf
        self.host = conf.host
        self.libvirt = libvirt_host or domain.LibvirtHost(
            conf.libvirt.connection_uri, conf.host
        )
        # progress_sink(context, migration_id, progress); the default casts
        # to the conductor, which records it on the migration.
        self._progress_sink = progress_sink
        self._conductor = None
        self._lock = threading.Lock()
        self._busy = {}  # instance uuid -> migration id
        # migration id -> Event set by cancel() while sync_overlay runs
        self._cancel_events = {}

    # -- helpers -----------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self, instance_uuid, migration_id):
        with self._lock:
            owner = self._busy.get(instance_uuid)
            if owner is not None:
                raise exception.MigrationBusy(
                    instance_uuid=instance_uuid,
                    owner=owner,
                    migration_id=migration_id,
                )
            self._busy[instance_uuid] = migration_id
        try:
            yield
        finally:
            with self._lock:
                del self._busy[instance_uuid]

    def _locate(self, instance_uuid):
        """Domain facts and the instance's files, checked against Nova's
        instances_path (a UUID that is not one could walk out of it)."""
        if not uuidutils.is_uuid_like(instance_uuid):
            raise exception.Invalid(
                reason="instance_uuid %r is not a UUID" % (instance_uuid,)
            )
        info = self.libvirt.domain_info(instance_uuid)
        instances_path = os.path.realpath(self.conf.agent.instances_path)
        instance_dir = os.path.join(instances_path, instance_uuid)
        disk_path = os.path.realpath(info.root_disk_path)
        if disk_path != os.path.join(instance_dir, "disk"):
            raise exception.InstanceDiskOutsideInstancesPath(
                instance_uuid=instance_uuid,
                path=info.root_disk_path,
                instances_path=instances_path,
            )
        return info, layout.InstanceFiles(instance_dir)

    def _require_shutoff(self, info, instance_uuid):
        if info.state != domain.SHUTOFF:
            raise exception.DomainNotShutOff(
                instance_uuid=instance_uuid, state=info.state
            )

    def _report(self, context, migration_id, progress):
        if self._progress_sink is not None:
            self._progress_sink(context, migration_id, progress)
            return
        if self._conductor is None:
            self._conductor = conductor_rpcapi.ConductorAPI()
        self._conductor.report_progress(context, migration_id, progress)

    # -- RPC API 1.0 -------------------------------------------------------

    def get_agent_info(self, context):
        return {
            "host": self.host,
            "version": cs2os_agent.__version__,
            "rpc_api_version": rpcapi.RPC_API_VERSION,
            "instances_path": self.conf.agent.instances_path,
            "libvirt_version": self.libvirt.version(),
            "transports": transfer.supported_transports(),
        }

    def probe_instance(self, context, instance_uuid):
        info, files = self._locate(instance_uuid)
        disk = qemu_img.info(
            files.disk, info.root_disk_format, force_share=True
        )
        return {
            "instance_uuid": instance_uuid,
            "domain_name": info.name,
            "domain_state": info.state,
            "instance_dir": files.instance_dir,
            "disk_path": files.disk,
            "disk_format": info.root_disk_format,
            "backing_file": disk.get("full-backing-filename")
            or disk.get("backing-filename"),
            "backing_format": disk.get("backing-filename-format"),
            "virtual_size": disk["virtual-size"],
            "actual_size": disk.get("actual-size"),
            "staged": os.path.exists(files.staged),
            "swapped": os.path.exists(files.orig),
        }

    def sync_overlay(self, context, migration_id, instance_uuid, source):
        with self._exclusive(instance_uuid, migration_id):
            info, files = self._locate(instance_uuid)
            reference = overlay.reference_for(
                files, info.root_disk_format, instance_uuid
            )
            with transfer.get_source(source, self.conf) as src:
                fingerprint = src.fingerprint()
                reused = self._reusable_staged(
                    files, migration_id, fingerprint, reference
                )
                if reused is not None:
                    LOG.info(
                        "Migration %s: %s already staged from the same "
                        "source; not copying again",
                        migration_id,
                        files.staged,
                    )
                    return dict(reused, reused=True)
                LOG.info(
                    "Migration %s: staging %s for instance %s",
                    migration_id,
                    src.describe(),
                    instance_uuid,
                )
                cancel_event = threading.Event()
                self._cancel_events[migration_id] = cancel_event
                try:
                    result = overlay.stage(
                        src,
                        files,
                        reference,
                        lambda total: self._new_monitor(
                            context, migration_id, total, cancel_event
                        ),
                        self.conf.transfer.checkpoint_mib * 1024 * 1024,
                    )
                finally:
                    self._cancel_events.pop(migration_id, None)
            faultpoints.reached("agent:sync_overlay:after")
            result.update(migration_id=migration_id, source=fingerprint)
            self._write_meta(files, result)
            LOG.info(
                "Migration %s: staged %d bytes in %.1f s",
                migration_id,
                result["bytes_copied"],
                result["seconds"],
            )
            return dict(result, reused=False)

    def swap_disk(self, context, migration_id, instance_uuid):
        with self._exclusive(instance_uuid, migration_id):
            info, files = self._locate(instance_uuid)
            self._require_shutoff(info, instance_uuid)
            reference = overlay.reference_for(
                files, info.root_disk_format, instance_uuid
            )
            if os.path.exists(files.staged):
                overlay.verify(files.staged, reference)
            faultpoints.reached("agent:swap_disk:before")
            result = swap.swap_in(files, instance_uuid)
            faultpoints.reached("agent:swap_disk:after")
            return dict(
                result,
                disk_path=files.disk,
                orig_path=files.orig,
                migration_id=migration_id,
            )

    def restore_disk(self, context, migration_id, instance_uuid):
        with self._exclusive(instance_uuid, migration_id):
            info, files = self._locate(instance_uuid)
            self._require_shutoff(info, instance_uuid)
            faultpoints.reached("agent:restore_disk:before")
            return dict(
                swap.restore(files, instance_uuid),
                disk_path=files.disk,
                migration_id=migration_id,
            )

    def cleanup(self, context, migration_id, instance_uuid):
        with self._exclusive(instance_uuid, migration_id):
            _info, files = self._locate(instance_uuid)
            faultpoints.reached("agent:cleanup:before")
            return dict(swap.cleanup(files), migration_id=migration_id)

    def cancel(self, context, migration_id):
        event = self._cancel_events.get(migration_id)
        if event is None:
            return {"migration_id": migration_id, "cancelled": False}
        event.set()
        LOG.info("Migration %s: cancel requested", migration_id)
        return {"migration_id": migration_id, "cancelled": True}

    # -- internals ---------------------------------------------------------

    def _new_monitor(self, context, migration_id, total, cancel_event):
        return transfer_monitor.TransferMonitor(
            migration_id,
            "sync_overlay",
            total,
            report=lambda p: self._report(context, migration_id, p),
            interval=self.conf.agent.progress_interval,
            max_bandwidth_mbps=self.conf.transfer.max_bandwidth_mbps,
            cancel_event=cancel_event,
        )

    @staticmethod
    def _staged_meta(files, migration_id):
        """The sidecar of ``staged`` if it holds this migration's disk."""
        if not os.path.exists(files.staged):
            return None
        try:
            with open(files.staged_meta) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        return meta if meta.get("migration_id") == migration_id else None

    def _reusable_staged(self, files, migration_id, fingerprint, reference):
        """The earlier result if ``staged`` already holds this very copy."""
        meta = self._staged_meta(files, migration_id)
        if meta is None or meta.get("source") != fingerprint:
            return None
        try:
            overlay.verify(files.staged, reference)
        except exception.Cs2osException:
            LOG.warning(
                "Migration %s: staged file fails verification; copying "
                "again",
                migration_id,
                exc_info=True,
            )
            return None
        return meta

    def _write_meta(self, files, result):
        fileutils.write_json_atomic(files.staged_meta, result)
        fileutils.fsync_dir(files.instance_dir)

    # -- RPC API 1.1: warm migration ----------------------------------------
    #
    # The agent's part of a live mirror: prepare_mirror exports a fresh
    # overlay T on the instance's base D through a qemu-storage-daemon and
    # opens the SSH tunnel the source host reaches it through; the caller
    # runs libvirt's block copy on the source host (cs2os_agent.mirror.
    # blockcopy) and, after its cutover (the source shut down or frozen,
    # the job ended), calls finish_mirror, which closes T cleanly and
    # stages it for swap_disk exactly as sync_overlay stages a copied
    # overlay.

    def _mirror_options(self):
        if "mirror" not in self.conf:
            # Until conf/__init__.py lists the module: register it here so
            # that the options (and a config file's [mirror] section) work.
            mirror_conf.register_opts(self.conf)
        return self.conf.mirror

    def _mirror_targets(self):
        """migration id -> MirrorTarget, for the targets this process runs."""
        with self._lock:
            if not hasattr(self, "_mirrors"):
                self._mirrors = {}
            return self._mirrors

    def prepare_mirror(self, context, migration_id, instance_uuid, source):
        with self._exclusive(instance_uuid, migration_id):
            options = self._mirror_options()
            targets = self._mirror_targets()
            for other_id, other in list(targets.items()):
                if (other.instance_uuid == instance_uuid
                        and other_id != migration_id
                        and other.state == "exporting"):
                    raise exception.MigrationBusy(
                        instance_uuid=instance_uuid, owner=other_id,
                        migration_id=migration_id)
            info, files = self._locate(instance_uuid)
            reference = overlay.reference_for(
                files, info.root_disk_format, instance_uuid
            )
            req = mirror_request.MirrorRequest.from_dict(source, self.conf)
            if req.virtual_size > reference.virtual_size:
                raise exception.OverlayTooLarge(
                    overlay_size=req.virtual_size,
                    disk_size=reference.virtual_size,
                )
            # The unsafe part, before anything is created: a shallow
            # mirror is right only if D shows the template's bytes.
            proof = baseproof.prove(
                reference.base_path, reference.base_format, req.base_proof
            )
            ssh_options = ssh_transport.SshOptions.from_conf(self.conf)
            ssh_options.check_key()
            old = targets.pop(migration_id, None)
            if old is not None:
                # A repeated prepare (a retry): the mirror starts afresh.
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
            targets[migration_id] = target
            return dict(description, instance_uuid=instance_uuid,
                        base_proof=proof)

    def mirror_status(self, context, migration_id):
        target = self._mirror_targets().get(migration_id)
        if target is None:
            raise mirror_errors.MirrorNotFound(migration_id=migration_id)
        return dict(target.status(), instance_uuid=target.instance_uuid)

    def finish_mirror(self, context, migration_id, instance_uuid):
        """Close T (durable), verify it, stage it as the cold path does."""
        with self._exclusive(instance_uuid, migration_id):
            info, files = self._locate(instance_uuid)
            targets = self._mirror_targets()
            target = targets.get(migration_id)
            if target is None or target.instance_uuid != instance_uuid:
                done = self._staged_by_mirror(files, migration_id)
                if done is not None:
                    return dict(done, reused=True)
                raise mirror_errors.MirrorNotFound(migration_id=migration_id)
            reference = overlay.reference_for(
                files, info.root_disk_format, instance_uuid
            )
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
                targets.pop(migration_id, None)
                raise
            allocated = qemu_img.allocated_bytes(path, "qcow2")
            os.rename(path, files.staged)
            fileutils.fsync_dir(files.instance_dir)
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
            self._write_meta(files, result)
            targets.pop(migration_id, None)
            LOG.info("Migration %s: mirror target staged as %s",
                     migration_id, files.staged)
            return dict(result, reused=False)

    def abort_mirror(self, context, migration_id, instance_uuid):
        """Stop the daemon and the tunnel, remove T; idempotent.

        Works after an agent restart too: the run directory's state file
        names the processes an earlier agent started.
        """
        with self._exclusive(instance_uuid, migration_id):
            _info, files = self._locate(instance_uuid)
            target = self._mirror_targets().pop(migration_id, None)
            if target is not None:
                target.abort()
            else:
                mirror_target.abandon(
                    mirror_target.run_dir_for(
                        self._mirror_options().run_dir, migration_id),
                    os.path.join(files.instance_dir,
                                 mirror_target.TARGET_NAME),
                )
            return {"migration_id": migration_id,
                    "aborted": target is not None}

    def stop_mirrors(self):
        """Tear down every mirror target of this process (agent shutdown).

        The daemons and tunnels run in sessions of their own, so they would
        outlive the agent; a mirror cut off here fails its block job, the
        source keeps running, and the conductor prepares it again.
        """
        targets = self._mirror_targets()
        for migration_id in list(targets):
            LOG.warning("Migration %s: stopping its mirror target (agent "
                        "shutdown)", migration_id)
            targets.pop(migration_id).abort()

    def _staged_by_mirror(self, files, migration_id):
        """The result of an earlier finish_mirror of this migration."""
        meta = self._staged_meta(files, migration_id)
        if meta is None or (meta.get("source") or {}).get(
                "transport") != "mirror":
            return None
        return meta
