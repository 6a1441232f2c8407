"""cs2os-conductor RPC endpoints.

The conductor is the only writer of migration records.  A request is
checked and recorded here, then run by the engine on a worker thread; the
call returns the record at once.
"""

import oslo_messaging as messaging
from oslo_log import log as logging
from oslo_utils import timeutils
from oslo_utils import uuidutils

from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor import maps
from cs2os_agent.conductor import plans
from cs2os_agent.conductor import request as request_schema
from cs2os_agent.conductor import rpcapi
from cs2os_agent.conductor import schedule

LOG = logging.getLogger(__name__)

MAX_LIMIT = 1000
# What a repeated idempotency key must repeat to get the same migration.
_REPLAY_FIELDS = ("source_ref", "mode", "target_host", "flavor",
                  "delete_source")


class ConductorManager:
    target = messaging.Target(version=rpcapi.RPC_API_VERSION)

    def __init__(self, db, engine, notifier=None, agent_api=None,
                 find_vm=None, preflight=None, select_vms=None):
        """``find_vm(ref)``: the CloudStack VM a request names (by id or
        name), to refuse a second active migration of it at once; None
        leaves that to the flow's validate step.  ``preflight(request)``:
        the report a ``dry_run`` request gets (conductor/preflight.py).
        ``select_vms(selector)``: the VMs a plan's CloudStack selector
        names (default: through [cloudstack]'s client)."""
        self.db = db
        self.engine = engine
        self.notifier = notifier
        self.agent_api = agent_api
        self.find_vm = find_vm
        self.preflight = preflight
        self.select_vms = select_vms or plans.default_select_vms

    def _resolve(self, ref):
        """The VM's id, or None when CloudStack cannot say now (the
        validate step then names the problem and claims the VM)."""
        if self.find_vm is None:
            return None
        try:
            return self.find_vm(ref)["id"]
        except exception.Cs2osException as exc:
            LOG.info("CloudStack VM %s not resolved at request time: %s",
                     ref, exc)
            return None

    def create_migration(self, context, request):
        """Record a migration request and start it.

        One active migration per CloudStack VM: a second one, by id or by
        name, is refused (MigrationConflict, 409, naming the active one).
        A repeated ``idempotency_key`` from the same project returns the
        migration the first request made instead of starting another.
        """
        req = request_schema.validate(request)
        if req["dry_run"]:
            return self._dry_run(req)
        return self._create(context, req)

    def _create_planned(self, context, req, plan_id, position=None):
        """A plan's migration (validated request ``req``): the same path,
        checks and limits as create_migration, with its plan (and its
        place in the plan, which orders waiters for a slot) recorded.
        (Private: not an RPC method; conductor/plans.py calls it.)"""
        return self._create(context, req, plan_id=plan_id,
                            position=position)

    def _create(self, context, req, plan_id=None, position=None):
        key = req.get("idempotency_key")
        if key:
            first = self.db.find_by_idempotency_key(context.project_id, key)
            if first is not None:
                return self._replay(first, req, key)
        options = {"networks": req["networks"],
                   "drop_unmapped_nics": req["drop_unmapped_nics"]}
        for name in ("config_drive", "keep_snapshots", "live_fallback"):
            if req.get(name):
                options[name] = True
        for name in ("cutover", "cutover_method", "project", "volume_type",
                     "start_at", "cutover_window", "aggregate",
                     "project_map", "flavor_map", "volume_type_map"):
            if req.get(name) is not None:
                options[name] = req[name]
        if position is not None:
            options["plan_position"] = position
        migration = self.db.create_migration({
            "id": uuidutils.generate_uuid(),
            "source_ref": req["source"],
            "mode": req["mode"],
            "target_host": req["host"],
            "flavor": req["flavor"],
            "delete_source": req["delete_source"],
            "state": states.QUEUED,
            "step": states.FIRST_STEP,
            "user_id": context.user_id,
            "project_id": context.project_id,
            "request_id": context.request_id,
            "options": options,
            "source": {},
            "resources": {},
            "result": {},
            "active_source": self._resolve(req["source"]),
            "idempotency_key": key,
            "plan_id": plan_id,
        })
        if migration.pop("replayed", False):
            # The same key won a race with this request.
            return self._replay(migration, req, key)
        LOG.info("Migration %s of CloudStack VM %s requested by %s",
                 migration["id"], req["source"], context.user_id)
        if self.notifier is not None:
            self.notifier.emit(context, "create", migration)
        if schedule.waiting_to_start(migration) is not None:
            # Said once, on the record: the engine claims it then.
            self.db.add_event(
                migration["id"], states.FIRST_STEP, "info",
                "queued until its start time %s (start_at): no conductor "
                "takes it before then" % migration["options"]["start_at"])
        self.engine.submit(migration["id"])
        return migration

    def _dry_run(self, req):
        """The preflight report; nothing is recorded, nothing created."""
        if self.preflight is None:
            raise exception.Invalid(
                reason="this conductor cannot run a preflight (dry_run)")
        LOG.info("Preflight of CloudStack VM %s", req["source"])
        return {"dry_run": True, "preflight": self.preflight(req)}

    def _replay(self, first, req, key):
        asked = {"source_ref": req["source"], "mode": req["mode"],
                 "target_host": req["host"], "flavor": req["flavor"],
                 "delete_source": req["delete_source"]}
        if req.get("aggregate"):
            # Admission recorded the host it chose from the aggregate.
            asked["target_host"] = first["target_host"]
        if (first.get("result") or {}).get("live_fallback") and \
                req["mode"] == states.LIVE:
            # The first request's live mode fell back to warm since.
            asked["mode"] = first["mode"]
        differ = sorted(f for f in _REPLAY_FIELDS if first[f] != asked[f])
        for name in ("project", "aggregate") + maps.FIELDS:
            if (first["options"] or {}).get(name) != req.get(name):
                differ.append(name)
        if differ:
            raise exception.IdempotencyKeyReused(
                key=key, migration_id=first["id"],
                detail="%s differ" % ", ".join(differ))
        LOG.info("Migration %s: a repeated request (idempotency key %s)",
                 first["id"], key)
        return self.db.get_migration(first["id"])

    def get_migration(self, context, migration_id):
        return self.db.get_migration(migration_id)

    def list_migrations(self, context, filters=None, limit=None,
                        marker=None):
        if limit is not None and not 0 < limit <= MAX_LIMIT:
            raise exception.Invalid(
                reason="limit must be between 1 and %d" % MAX_LIMIT)
        return self.db.list_migrations(filters, limit=limit, marker=marker)

    def cancel_migration(self, context, migration_id):
        """Compare-and-set: a cancel never flips a final state, a rollback
        or a committed migration; losing that race is a 409."""
        while True:
            migration = self.db.get_migration(migration_id)
            state = migration["state"]
            if state == states.CANCELLING:
                return migration
            if state in states.FINAL or state == states.ROLLING_BACK:
                raise exception.MigrationStateConflict(
                    migration_id=migration_id, state=state, action="cancel")
            if migration["committed"]:
                raise exception.MigrationStateConflict(
                    migration_id=migration_id, state="committed (the Nova "
                    "server runs the migrated disk)", action="cancel")
            if state == states.QUEUED:
                values = {"state": states.CANCELLED,
                          "error": "cancelled before it started",
                          "finished_at": timeutils.utcnow()}
            else:
                values = {"state": states.CANCELLING}
            if self.db.update_migration(
                    migration_id, values,
                    expect={"state": state, "committed": False}):
                break
            # It moved on meanwhile: look again.
        if state == states.QUEUED:
            return self.db.get_migration(migration_id)
        self.engine.cancel(migration_id)
        # A copy in progress stops at once, wherever its flow runs.
        host = migration["resources"].get("host")
        if migration["step"] in states.AGENT_COPY_STEPS and host \
                and self.agent_api:
            try:
                self.agent_api.cancel(context, host, migration_id)
            except Exception:  # noqa: BLE001 - the flow notices anyway
                LOG.warning("Migration %s: agent on %s did not take the "
                            "cancel", migration_id, host, exc_info=True)
        return self.db.get_migration(migration_id)

    def cutover_migration(self, context, migration_id, cutover_method=None):
        """Record the operator's go for a held warm migration (1.1).

        The flow reads it from the record (any conductor may run it) and
        cuts over once the mirror is READY.  ``cutover_method`` (1.2):
        "shutdown" or "force", instead of the request's; a later call may
        still change it until the cutover begins.  (Not "method" on the
        wire: oslo.messaging's call() takes that name itself.)
        """
        method = cutover_method
        if method is not None:
            request_schema.check_cutover_method(method)
        migration = self.db.get_migration(migration_id)
        state, step = migration["state"], migration["step"]
        if migration["mode"] != states.WARM:
            raise exception.MigrationStateConflict(
                migration_id=migration_id, state="a %s migration"
                % migration["mode"], action="cut over (only warm migrations "
                "have a cutover)")
        if state not in (states.QUEUED, states.RUNNING) \
                or step in states.AFTER_CUTOVER or migration["committed"]:
            raise exception.MigrationStateConflict(
                migration_id=migration_id, state="%s at step %s"
                % (state, step), action="cut over")
        options = dict(migration["options"] or {})
        requested = options.get("cutover_requested")
        if not requested or (method and requested.get("method") != method):
            options["cutover_requested"] = {
                "by": context.user_id,
                "at": timeutils.utcnow().isoformat()}
            if method:
                options["cutover_requested"]["method"] = method
            if self.db.update_migration(
                    migration_id, {"options": options},
                    expect={"state": state}) is None:
                # It moved on (failed, cancelled) meanwhile.
                return self.cutover_migration(context, migration_id, method)
            self.db.add_event(migration_id, "cutover", "info",
                              "cutover%s requested by %s" % (
                                  " (%s)" % method if method else "",
                                  context.user_id))
        return self.db.get_migration(migration_id)

    def retry_migration(self, context, migration_id):
        """Run a failed or cancelled migration again: from the start, or,
        once it is committed, from the step that failed (the forward flow
        only: a committed migration never rolls back).  Claims the
        CloudStack VM again: refused while another migration holds it."""
        updated = None
        migration = self.db.get_migration(migration_id)
        values = {"state": states.QUEUED, "error": None,
                  "finished_at": None, "lease_until": None,
                  "conductor": None,
                  "active_source": migration["source_vm_id"]}
        if not migration["committed"]:
            # A held migration is held again: the earlier go was for the
            # earlier attempt.
            options = dict(migration["options"] or {})
            options.pop("cutover_requested", None)
            values.update(step=states.FIRST_STEP, options=options)
        for state in (states.FAILED, states.CANCELLED):
            updated = self.db.update_migration(
                migration_id, values, expect={"state": state})
            if updated:
                break
        if not updated:
            migration = self.db.get_migration(migration_id)
            raise exception.MigrationStateConflict(
                migration_id=migration_id, state=migration["state"],
                action="retry (only failed or cancelled ones can be)")
        self.db.add_event(migration_id, "retry", "info",
                          "retry requested by %s" % context.user_id)
        self.engine.submit(migration_id)
        return self.db.get_migration(migration_id)

    def report_progress(self, context, migration_id, progress):
        """An agent's copy (sync_overlay, the cold flow's sync step)."""
        try:
            self.db.update_migration(migration_id, {
                "bytes_done": int(progress["bytes_done"]),
                "bytes_total": int(progress["bytes_total"]),
                "rate_bps": int(progress["rate_bps"]),
                "progress_step": states.COPY_STEP,
            })
        except exception.MigrationNotFound:
            LOG.warning("Progress for unknown migration %s", migration_id)

    # -- plans (1.5): conductor/plans.py -----------------------------------

    def create_plan(self, context, plan):
        return plans.create(self, context, plan)

    def get_plan(self, context, plan_id):
        return plans.show(self, plan_id)

    def list_plans(self, context, filters=None):
        return plans.list_plans(self, filters)

    def validate_plan(self, context, plan_id):
        return plans.validate(self, context, plan_id)

    def start_plan(self, context, plan_id):
        return plans.start(self, context, plan_id)

    def cancel_plan(self, context, plan_id):
        return plans.cancel(self, context, plan_id)

    def delete_plan(self, context, plan_id):
        plans.delete(self, context, plan_id)

    def retry_plan(self, context, plan_id):
        return plans.retry(self, context, plan_id)
