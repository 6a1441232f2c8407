"""cs2os-agent RPC endpoints: adopt a CloudStack overlay into Nova's disk.

Every method is idempotent: the conductor may repeat any call after a
crash or timeout on either side and gets the same end state.  Work on one
instance is serialised; a second migration touching the same instance is
refused at once rather than queued behind an hour-long copy.
"""

import contextlib
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
from cs2os_agent.agent import layers as chain_layers
from cs2os_agent.agent import layout
from cs2os_agent.agent import live_rpc
from cs2os_agent.agent import overlay
from cs2os_agent.agent import rpcapi
from cs2os_agent.agent import swap
from cs2os_agent.agent import volume_mirror_rpc
from cs2os_agent.agent import volume_target
from cs2os_agent.agent import volumes
from cs2os_agent.agent.mirror import staging as mirror_staging
from cs2os_agent.common import exception
from cs2os_agent.common import faultpoints
from cs2os_agent.common import fileutils
from cs2os_agent.common import mirror_errors
from cs2os_agent.conductor import rpcapi as conductor_rpcapi
from cs2os_agent.transfer import monitor as transfer_monitor

LOG = logging.getLogger(__name__)


class AgentManager(volume_mirror_rpc.VolumeMirrorEndpoints,
                   live_rpc.LiveEndpoints):
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
        # migration id -> MirrorTarget, the warm-migration targets this
        # process started (prepare_mirror until finish or abort).
        self._mirrors = {}
        # (migration id, volume id) -> a data disk's target (1.5).
        self._volume_mirrors = {}
        self._live_moves = {}  # migration id -> a live move (1.6)

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

    def sync_overlay(self, context, migration_id, instance_uuid, source,
                     layers=None, keep_snapshots=False, fmt="qcow2"):
        """``layers`` (1.2): source dicts of the chain's layers between the
        template and ``source``, top-down; merged into the staged file.
        ``keep_snapshots`` (1.3): copy the whole file and keep its internal
        snapshots, instead of the current state's data alone.  ``fmt``
        (1.4): raw for a root volume that is one raw image (RBD)."""
        layers = chain_layers.requests(layers)
        keep_snapshots = bool(keep_snapshots)
        volumes.check_format(fmt, [source] + layers)
        with self._exclusive(instance_uuid, migration_id):
            info, files = self._locate(instance_uuid)
            reference = overlay.reference_for(
                files, info.root_disk_format, instance_uuid
            )
            with contextlib.ExitStack() as sources:
                src = sources.enter_context(
                    transfer.get_source(source, self.conf))
                layer_srcs = [
                    sources.enter_context(
                        transfer.get_source(layer, self.conf))
                    for layer in layers
                ]
                # The overlay's alone without layers, as before 1.2.
                fingerprint = chain_layers.chain_fingerprint(src, layer_srcs)
                if keep_snapshots:  # another staged file than without
                    fingerprint = dict(fingerprint, keep_snapshots=True)
                if fmt == "raw":
                    fingerprint = dict(fingerprint, format="raw")
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
                if layer_srcs:
                    LOG.info("Migration %s: merging %d layers: %s",
                             migration_id, len(layer_srcs),
                             ", ".join(x.describe() for x in layer_srcs))
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
                        layers=layer_srcs,
                        keep_snapshots=keep_snapshots,
                        fmt=fmt,
                    )
                finally:
                    self._cancel_events.pop(migration_id, None)
            faultpoints.reached("agent:sync_overlay:after")
            result.update(migration_id=migration_id, source=fingerprint)
            overlay.write_meta(files, result)
            LOG.info(
                "Migration %s: staged %d bytes in %.1f s",
                migration_id,
                result["bytes_copied"],
                result["seconds"],
            )
            return dict(result, reused=False)

    def sync_volume(self, context, migration_id, instance_uuid, volume_id,
                    chain, fmt="qcow2"):
        """1.4: write a CloudStack data disk into the Cinder volume Nova
        attached to the (stopped) instance.  ``chain``: source dicts of
        the disk's files, top-down, the last one without a backing file
        (agent/volumes.py); ``fmt``: qcow2, or raw (one RBD image)."""
        if not isinstance(chain, (list, tuple)) or not chain:
            raise exception.InvalidSource(
                source="chain", reason="a data disk's chain must be a "
                "non-empty list of sources")
        if not uuidutils.is_uuid_like(volume_id):
            raise exception.Invalid(
                reason="volume_id %r is not a UUID" % (volume_id,))
        volumes.check_format(fmt, chain)
        with self._exclusive(instance_uuid, migration_id):
            info, files = self._locate(instance_uuid)
            self._require_shutoff(info, instance_uuid)
            _state, xml = self.libvirt.domain_xml(instance_uuid)
            target = volume_target.find(xml, volume_id, instance_uuid)
            with contextlib.ExitStack() as stack:
                srcs = [stack.enter_context(
                    transfer.get_source(source, self.conf))
                    for source in chain]
                fingerprint = [src.fingerprint() for src in srcs]
                done = volumes.read_meta(files.instance_dir, volume_id,
                                         migration_id, fingerprint)
                if done is not None:
                    return dict(done, reused=True)
                virtual_size, headers = volumes.inspect(srcs, fmt)
                key = volumes.key_for(target, self.libvirt,
                                      self.conf.agent.ceph_keyring_dir)
                LOG.info("Migration %s: writing %s into %s", migration_id,
                         srcs[0].describe(), target.describe())
                cancel_event = threading.Event()
                self._cancel_events[migration_id] = cancel_event
                started = time.monotonic()
                try:
                    paths, copied = volumes.copy_chain(
                        srcs, headers, files.instance_dir, volume_id,
                        lambda total: self._new_monitor(
                            context, migration_id, total, cancel_event,
                            "sync_volume"),
                        self.conf.transfer.checkpoint_mib * 1024 * 1024)
                finally:
                    self._cancel_events.pop(migration_id, None)
            try:
                if headers:
                    volumes.link_chain(paths)
                length, write_s, verify_s = volumes.write(
                    paths[0], fmt, virtual_size, target, key)
                # Written, not yet recorded: a call again writes it again.
                faultpoints.reached("agent:sync_volume:after")
            finally:
                volumes.remove_copies(files.instance_dir, volume_id)
            result = {
                "migration_id": migration_id, "volume_id": volume_id,
                "source": fingerprint, "target": target.describe(),
                "target_dev": target.target_dev, "format": fmt,
                "files": len(paths), "bytes_copied": copied,
                "virtual_size": virtual_size,
                "volume_size": length, "verified": True,
                "seconds": round(time.monotonic() - started, 3),
                "write_seconds": round(write_s, 3),
                "verify_seconds": round(verify_s, 3),
            }
            fileutils.write_json_atomic(
                volumes.meta_name(files.instance_dir, volume_id), result)
            LOG.info("Migration %s: %s written and verified (%d bytes "
                     "copied)", migration_id, target.describe(), copied)
            return dict(result, reused=False)

    def swap_disk(self, context, migration_id, instance_uuid):
        with self._exclusive(instance_uuid, migration_id):
            info, files = self._locate(instance_uuid)
            self._require_shutoff(info, instance_uuid)
            reference = overlay.reference_for(
                files, info.root_disk_format, instance_uuid
            )
            if os.path.exists(files.staged):
                overlay.verify(files.staged, reference, virtual_size=(
                    overlay.staged_size(files, migration_id)))
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
            self._forget_live(migration_id)  # no hop left to undo
            return dict(
                swap.restore(files, instance_uuid),
                disk_path=files.disk,
                migration_id=migration_id,
            )

    def cleanup(self, context, migration_id, instance_uuid):
        with self._exclusive(instance_uuid, migration_id):
            _info, files = self._locate(instance_uuid)
            faultpoints.reached("agent:cleanup:before")
            self._forget_live(migration_id)
            return dict(swap.cleanup(files), migration_id=migration_id)

    def cancel(self, context, migration_id):
        event = self._cancel_events.get(migration_id)
        if event is None:
            return {"migration_id": migration_id, "cancelled": False}
        event.set()
        LOG.info("Migration %s: cancel requested", migration_id)
        return {"migration_id": migration_id, "cancelled": True}

    # -- internals ---------------------------------------------------------

    def _new_monitor(self, context, migration_id, total, cancel_event,
                     what="sync_overlay"):
        return transfer_monitor.TransferMonitor(
            migration_id,
            what,
            total,
            report=lambda p: self._report(context, migration_id, p),
            interval=self.conf.agent.progress_interval,
            max_bandwidth_mbps=self.conf.transfer.max_bandwidth_mbps,
            cancel_event=cancel_event,
        )

    def _reusable_staged(self, files, migration_id, fingerprint, reference):
        """The earlier result if ``staged`` already holds this very copy."""
        meta = overlay.read_meta(files, migration_id)
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

    # -- RPC API 1.1: warm migration ----------------------------------------
    #
    # The agent's part of a live mirror (agent/mirror/staging.py):
    # prepare_mirror exports a fresh overlay T on the instance's base D
    # through a qemu-storage-daemon and opens the SSH tunnel the source
    # host reaches it through; the conductor runs libvirt's block copy on
    # the source host (cs2os_agent.sourcehost.blockcopy) and, after its
    # cutover (the source shut down or frozen, the job ended), calls
    # finish_mirror, which closes T cleanly and stages it for swap_disk
    # exactly as sync_overlay stages a copied overlay.

    def prepare_mirror(self, context, migration_id, instance_uuid, source):
        with self._exclusive(instance_uuid, migration_id):
            mirror_staging.refuse_busy(
                self._mirrors, instance_uuid, migration_id
            )
            info, files = self._locate(instance_uuid)
            reference = overlay.reference_for(
                files, info.root_disk_format, instance_uuid
            )
            return mirror_staging.prepare(
                self.conf, self._mirrors, migration_id, instance_uuid,
                files, reference, source,
            )

    def mirror_status(self, context, migration_id):
        target = self._mirrors.get(migration_id)
        if target is None:
            raise mirror_errors.MirrorNotFound(migration_id=migration_id)
        return dict(target.status(), instance_uuid=target.instance_uuid)

    def finish_mirror(self, context, migration_id, instance_uuid):
        """Close T (durable), verify it, stage it as the cold path does."""
        with self._exclusive(instance_uuid, migration_id):
            info, files = self._locate(instance_uuid)
            target = self._mirrors.get(migration_id)
            if target is None or target.instance_uuid != instance_uuid:
                done = mirror_staging.staged_earlier(files, migration_id)
                if done is not None:
                    return dict(done, reused=True)
                raise mirror_errors.MirrorNotFound(migration_id=migration_id)
            reference = overlay.reference_for(
                files, info.root_disk_format, instance_uuid
            )
            return mirror_staging.finish(
                self._mirrors, migration_id, target, files, reference
            )

    def abort_mirror(self, context, migration_id, instance_uuid):
        """Stop the daemon and the tunnel, remove T; idempotent.

        Works after an agent restart too: the run directory's state file
        names the processes an earlier agent started.
        """
        with self._exclusive(instance_uuid, migration_id):
            _info, files = self._locate(instance_uuid)
            aborted = mirror_staging.abort(
                self.conf, self._mirrors, migration_id, files
            )
            return {"migration_id": migration_id, "aborted": aborted}

    def stop_mirrors(self):
        """Tear down every mirror target of this process (agent shutdown).

        The daemons and tunnels run in sessions of their own, so they would
        outlive the agent; a mirror cut off here fails its block job, the
        source keeps running, and the conductor prepares it again.
        """
        mirror_staging.stop_all(self._mirrors)
        self.stop_volume_mirrors()
