"""RPC API 1.6: live mode, the running guest moved into Nova's domain.

The conductor's order: ``prepare_live_target`` (T, a fresh overlay on
Nova's base D, proven D == B, staged), ``swap_disk`` (T becomes Nova's
``disk``), ``live_hop`` (libvirt's live migration of A from the KVM host
onto T here, as a temporary domain with A's UUID: :mod:`.live.hop`),
``begin_live_move`` (B's QEMU waits for the guest's state; the conductor
sets Nova's server ACTIVE now) and ``finish_live_move`` (the state sent,
B runs the guest: :mod:`.live.move`).  The undo: ``abort_live_move``,
``live_hop_back``, ``restore_disk``.

Every call is idempotent; what a repeated call or a restarted agent
needs is in the migration's record (:mod:`.live.state`).  Refusals,
undone failures and states an operator must look at cross RPC as
``exception.LiveRefused`` / ``LiveFailed`` / ``LiveIncomplete``.

Mixed into AgentManager, whose ``_exclusive``, ``_locate``,
``_require_shutoff``, ``_mirrors`` and ``conf`` these use; the moves in
progress live in ``_live_moves`` (migration id -> handshake.MoveRun).
"""

import re

from oslo_log import log as logging

from cs2os_agent.agent import overlay
from cs2os_agent.agent.live import errors
from cs2os_agent.agent.live import handshake
from cs2os_agent.agent.live import hop
from cs2os_agent.agent.live import livehost
from cs2os_agent.agent.live import move
from cs2os_agent.agent.live import state
from cs2os_agent.agent.mirror import staging
from cs2os_agent.common import exception

LOG = logging.getLogger(__name__)

# How long the move may take once released (B loading the state), on
# top of the wait at the gate.
MOVE_SECONDS = 120
_HOP_ERRORS = (errors.LiveMoveRefused, errors.HopFailed,
               errors.HopIncomplete)
_HOST = re.compile(r"^[A-Za-z0-9.:\-\[\]]+$")


def _source(source):
    """(host, A's name) of a request's ``source``."""
    if not isinstance(source, dict) or not isinstance(
            source.get("host"), str) or not isinstance(
            source.get("domain"), str) or not source["domain"]:
        raise exception.InvalidSource(
            source="live", reason="a live source is {'host': address of "
            "the KVM host, 'domain': A's libvirt name}")
    if not _HOST.match(source["host"]):
        raise exception.InvalidSource(
            source="live", reason="not a host address: %r" % source["host"])
    return source["host"], source["domain"]


class LiveEndpoints:
    """The manager's __init__ sets ``_live_moves = {}``."""

    def _live_dir(self):
        return state.ensure_dir(self.conf.live.run_dir)

    def _forget_live(self, migration_id):
        """The end of a migration (cleanup, restore_disk): its live record
        goes, unless a temporary domain may still need a hop back."""
        if state.forget(self.conf.live.run_dir, migration_id):
            LOG.info("Migration %s: live record removed", migration_id)

    def prepare_live_target(self, context, migration_id, instance_uuid,
                            base_proof, virtual_size=None):
        """T on D, proven D == B, staged for swap_disk; after the swap a
        call again returns the first result.  ``virtual_size``: A's, which
        T must have for the hop's disk copy (default: Nova's)."""
        with self._exclusive(instance_uuid, migration_id):
            info, files = self._locate(instance_uuid)
            earlier = livehost.staged_target(files, migration_id)
            if earlier is not None:
                return dict(earlier, reused=True)
            self._require_shutoff(info, instance_uuid)
            reference = overlay.reference_for(
                files, info.root_disk_format, instance_uuid)
            return staging.stage_fresh(self._mirrors, migration_id,
                                       instance_uuid, files, reference,
                                       base_proof, virtual_size)

    def live_hop(self, context, migration_id, instance_uuid, source):
        """A onto this host as ``cs2os-live-<id>``, its root disk onto
        Nova's (swapped-in T), only A's top layer copied."""
        host, name = _source(source)
        run_dir = self._live_dir()
        with self._exclusive(instance_uuid, migration_id):
            record = state.load(run_dir, migration_id)
            with livehost.Local(self.conf) as local:
                done = local.hopped_earlier(record, instance_uuid)
                if done is not None:
                    return dict(done, reused=True)
                info, files = self._locate(instance_uuid)
                self._require_shutoff(info, instance_uuid)
                livehost.require_swapped(files, migration_id)
                local.refuse_unrecorded(livehost.temp_name(migration_id))
                with livehost.Kvm(self.conf, host) as kvm:
                    a = kvm.domain(name)
                    try:
                        result = hop.hop(
                            kvm.conn, a, local.conn,
                            {livehost.root_dev(a): files.disk},
                            livehost.temp_name(migration_id),
                            formats={livehost.root_dev(a): "qcow2"},
                            files=livehost.console_files(a, files),
                            migrate_address=self.conf.live.migrate_address,
                            incremental=True,
                            timeout=self.conf.live.hop_timeout)
                    except _HOP_ERRORS as exc:
                        raise errors.for_rpc(exc) from None
                hop_rec = livehost.hop_record(result, source)
            state.update(run_dir, migration_id, instance_uuid=instance_uuid,
                         hop=hop_rec, hop_back=None, move=None)
            LOG.info("Migration %s: %s hopped here as %s", migration_id,
                     name, hop_rec["temp_domain"])
            return dict(hop_rec["result"], reused=False)

    def live_hop_back(self, context, migration_id, instance_uuid, source):
        """The undo of live_hop: the temporary domain back onto A's own
        disks on the KVM host, under A's name."""
        host, _name = _source(source)
        run_dir = self._live_dir()
        with self._exclusive(instance_uuid, migration_id):
            record = state.load(run_dir, migration_id)
            hop_rec = record.get("hop")
            if hop_rec is None:
                done = record.get("hop_back")
                return dict(done, reused=True) if done else {
                    "migration_id": migration_id, "hopped_back": False}
            if (record.get("move") or {}).get("outcome") == "running":
                raise exception.LiveRefused(
                    reason="the guest runs in Nova's domain %s now: there "
                    "is no temporary domain to hop back" % instance_uuid)
            with livehost.Local(self.conf) as local:
                temp = local.temp_domain(hop_rec)
                if temp is None:
                    local.refuse_if_moved(instance_uuid, hop_rec)
                    return {"migration_id": migration_id,
                            "hopped_back": False}
                with livehost.Kvm(self.conf, host) as kvm:
                    try:
                        back = hop.hop_back(
                            livehost.hop_result(temp, hop_rec), kvm.conn,
                            migrate_address=host,
                            timeout=self.conf.live.hop_timeout)
                    except _HOP_ERRORS as exc:
                        raise errors.for_rpc(exc) from None
                    done = {"migration_id": migration_id,
                            "hopped_back": True,
                            "domain": hop_rec["source_name"],
                            "downtime_ms": back.downtime_ms,
                            "seconds": round(back.seconds, 3)}
            state.update(run_dir, migration_id, hop=None, hop_back=done,
                         move=None)
            LOG.info("Migration %s: hopped back to %s on %s", migration_id,
                     hop_rec["source_name"], host)
            return dict(done, reused=False)

    def begin_live_move(self, context, migration_id, instance_uuid,
                        wait_seconds):
        """Start the move of the temporary domain into B; returns once B's
        QEMU waits for the stream (B paused)."""
        wait = livehost.wait_seconds(wait_seconds,
                                     self.conf.live.move_wait_seconds)
        run_dir = self._live_dir()
        with self._exclusive(instance_uuid, migration_id):
            run = self._live_moves.get(migration_id)
            if run is not None and not run.ended.is_set():
                if run.waiting.is_set() and run.decision is None:
                    return {"migration_id": migration_id,
                            "target_waiting": True, "reused": True}
                raise exception.LiveRefused(
                    reason="the move of migration %s is already released"
                    % migration_id)
            record = state.load(run_dir, migration_id)
            move_rec = record.get("move") or {}
            if move_rec.get("outcome") == "running":
                return {"migration_id": migration_id,
                        "target_waiting": False, "finished": True}
            hop_rec = record.get("hop")
            if hop_rec is None or record.get("instance_uuid") != \
                    instance_uuid:
                raise exception.LiveRefused(
                    reason="migration %s hopped no guest here for instance "
                    "%s: call live_hop first" % (migration_id, instance_uuid))
            info, files = self._locate(instance_uuid)
            self._require_shutoff(info, instance_uuid)
            nova_size = livehost.nova_root_size(info, files, instance_uuid)
            local = livehost.Local(self.conf).open()
            try:
                temp = local.temp_domain(hop_rec)
                if temp is None:
                    raise exception.LiveRefused(
                        reason="the temporary domain %s does not run here"
                        % hop_rec["temp_domain"])
                target = local.conn.lookupByUUIDString(instance_uuid)
            except BaseException:
                local.close()
                raise

            def run_move(gate):
                try:
                    result = move.move(local.conn, temp, target, run_dir,
                                       timeout=wait + MOVE_SECONDS,
                                       before_stream=gate)
                    livehost.grow_disk(target, files.disk, nova_size)
                    return result
                finally:
                    local.close()

            def on_done(ended):
                state.update(run_dir, migration_id,
                             move=handshake.outcome(ended))

            state.update(run_dir, migration_id, move=None)
            run = handshake.MoveRun(migration_id, run_move, wait, on_done)
            self._live_moves[migration_id] = run
            run.start()
            if not run.wait_started():
                self._live_moves.pop(migration_id, None)
                raise errors.for_rpc(run.error)
            LOG.info("Migration %s: %s waits for the guest's state (at "
                     "most %s s)", migration_id, instance_uuid, wait)
            return {"migration_id": migration_id, "target_waiting": True,
                    "reused": False}

    def finish_live_move(self, context, migration_id):
        """Send the state: B runs the guest.  Called again: the outcome."""
        run = self._live_moves.get(migration_id)
        if run is None:
            return self._move_outcome(migration_id)
        run.release(handshake.FINISH)
        run.join()
        self._live_moves.pop(migration_id, None)
        if run.error is not None:
            raise errors.for_rpc(run.error)
        return dict(handshake.outcome(run)["result"],
                    migration_id=migration_id, reused=False)

    def abort_live_move(self, context, migration_id):
        """Call the move off before the state was sent: the temporary
        domain runs on, B is shut off."""
        run = self._live_moves.get(migration_id)
        if run is None:
            move_rec = state.load(self.conf.live.run_dir,
                                  migration_id).get("move") or {}
            return {"migration_id": migration_id,
                    "aborted": move_rec.get("outcome") == "aborted",
                    "reused": True}
        took = run.release(handshake.ABORT)
        run.join()
        self._live_moves.pop(migration_id, None)
        if isinstance(run.error, errors.LiveMoveIncomplete):
            raise errors.for_rpc(run.error)
        return {"migration_id": migration_id,
                "aborted": took and run.error is not None,
                "reused": False}

    def _move_outcome(self, migration_id):
        run_dir = self.conf.live.run_dir
        record = state.load(run_dir, migration_id)
        move_rec = record.get("move")
        if move_rec is not None:
            if move_rec["outcome"] != "running":
                handshake.raise_recorded(move_rec)
            return dict(move_rec["result"], migration_id=migration_id,
                        reused=True)
        # No move known: a finish that completed while the agent died
        # before it recorded it leaves B running and the temporary gone.
        if record.get("hop") is not None:
            with livehost.Local(self.conf) as local:
                if local.moved(record["instance_uuid"], record["hop"]):
                    result = {"state": "running", "recovered": True}
                    state.update(run_dir, migration_id, move={
                        "outcome": "running", "result": result})
                    return dict(result, migration_id=migration_id)
        raise exception.LiveRefused(
            reason="no live move of migration %s is in progress here"
            % migration_id)
