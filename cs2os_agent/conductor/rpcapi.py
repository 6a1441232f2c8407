"""Client side of the cs2os-conductor RPC API.

This is the API other OpenStack services (and cs2os-api) use to run
migrations; the agents use ``report_progress``.

API version history:

    1.0 - Initial version: create_migration, get_migration,
          list_migrations, cancel_migration, retry_migration,
          report_progress.
    1.1 - Warm migration: cutover_migration; create_migration takes
          "mode": "warm" and "cutover": "auto" | "manual".
    1.2 - Clean cutover: create_migration takes "cutover_method":
          "shutdown" (default) | "force"; cutover_migration takes
          cutover_method.
    1.3 - Owners: create_migration takes "project" (the Keystone project
          the server lands in) and "config_drive": bool.
    1.4 - create_migration takes "keep_snapshots": bool (keep the root
          volume's internal qcow2 snapshots in the migrated disk) and
          "dry_run": bool (answer {"dry_run": true, "preflight": report}
          and record nothing).
    1.5 - Plans: create_plan, get_plan, list_plans, validate_plan,
          start_plan, cancel_plan, delete_plan, retry_plan.
    1.6 - create_migration takes "volume_type": the Cinder volume type of
          the data disks' volumes.
    1.7 - Scheduling: create_migration takes "start_at" (ISO 8601: queued
          until then) and "cutover_window": {"start", "end"} (warm: the
          cutover happens inside it); create_plan takes "limits" and
          "start_at"; get_plan answers the plan's "events".
    1.8 - Host aggregates: create_migration, and create_plan's defaults
          and overrides, take "aggregate" (a Nova host aggregate id or
          name, instead of "host").
    1.9 - Maps: create_migration, and create_plan's defaults and
          overrides, take "project_map", "flavor_map" and
          "volume_type_map" (looked up before the [cloudstack] options
          of the same names).
    1.10 - Live mode: create_migration, and create_plan's defaults and
           overrides, take "mode": "live" and "live_fallback": bool.
"""

import oslo_messaging as messaging

from cs2os_agent.common import rpc

TOPIC = "cs2os-conductor"
# The request fields 1.9 added (conductor/maps.py FIELDS; not imported:
# the API imports this module and needs nothing of the conductor's).
MAPS = ("project_map", "flavor_map", "volume_type_map")
# What 1.10 added: the live mode (common/states.py LIVE) and its field.
LIVE = "live"
RPC_API_VERSION = "1.10"


class ConductorAPI:
    def __init__(self, topic=TOPIC, timeout=None):
        """``timeout``: seconds a call waits (None: rpc_response_timeout)."""
        target = messaging.Target(topic=topic, version=RPC_API_VERSION)
        self.client = rpc.get_client(target, version_cap=RPC_API_VERSION)
        self.timeout = timeout

    def _call(self, context, method, version="1.0", **kwargs):
        return self.client.prepare(version=version,
                                   timeout=self.timeout).call(
            context, method, **kwargs)

    def create_migration(self, context, request):
        """Validate ``request`` and queue it; returns the migration record.

        ``request``: {"source": CloudStack VM id or name (required),
        "host": compute host, "flavor": name or id, "mode": "cold" or
        "warm", "cutover": "auto" or "manual" (warm only),
        "cutover_method": "shutdown" or "force" (warm only, 1.2),
        "delete_source": bool, "networks": {CloudStack network: Neutron
        network}, "drop_unmapped_nics": bool, "project": Keystone project
        id or name (1.3), "config_drive": bool (1.3), "keep_snapshots":
        bool (1.4), "dry_run": bool (1.4: the preflight report instead of
        a record; nothing is recorded or created), "volume_type": Cinder
        volume type id or name (1.6), "start_at": ISO 8601 time (1.7),
        "cutover_window": {"start", "end"} (warm only, 1.7), "aggregate":
        Nova host aggregate id or name, instead of "host" (1.8),
        "project_map", "flavor_map", "volume_type_map": {key: value} as
        the [cloudstack] options (1.9), "mode": "live" and
        "live_fallback": bool (1.10)}.
        """
        # An older conductor would refuse a newer field as unknown: say so
        # by the version, as oslo.messaging does.
        request = request or {}
        version = "1.0"
        if "cutover_method" in request:
            version = "1.2"
        if {"project", "config_drive"} & set(request):
            version = "1.3"
        if {"keep_snapshots", "dry_run"} & set(request):
            version = "1.4"
        if "volume_type" in request:
            version = "1.6"
        if {"start_at", "cutover_window"} & set(request):
            version = "1.7"
        if "aggregate" in request:
            version = "1.8"
        if set(MAPS) & set(request):
            version = "1.9"
        if _live(request):
            version = "1.10"
        return self._call(context, "create_migration", version=version,
                          request=request)

    def get_migration(self, context, migration_id):
        return self._call(context, "get_migration",
                          migration_id=migration_id)

    def list_migrations(self, context, filters=None, limit=None,
                        marker=None):
        return self._call(context, "list_migrations", filters=filters or {},
                          limit=limit, marker=marker)

    def cancel_migration(self, context, migration_id):
        return self._call(context, "cancel_migration",
                          migration_id=migration_id)

    def retry_migration(self, context, migration_id):
        return self._call(context, "retry_migration",
                          migration_id=migration_id)

    def cutover_migration(self, context, migration_id, method=None):
        """Let a warm migration held for the operator cut over (1.1).

        It cuts over as soon as its mirror is READY (at once if it is).
        ``method`` (1.2): "shutdown" or "force" instead of the request's;
        sent as "cutover_method" (oslo.messaging's call() takes "method"
        itself).
        """
        if method is None:
            return self._call(context, "cutover_migration", version="1.1",
                              migration_id=migration_id)
        return self._call(context, "cutover_migration", version="1.2",
                          migration_id=migration_id, cutover_method=method)

    # -- plans (1.5) --------------------------------------------------------

    def create_plan(self, context, plan):
        """``plan``: {"name", "defaults": {request fields but source},
        "vms": [VM id or name, or {"vm", "overrides"}], "selector":
        {account, domain, project, zone, tag, host, pool}, "limits"
        (1.7): {max_in_flight, max_per_compute_host, max_per_kvm_host,
        max_per_pool}, "start_at" (1.7)}; the plan's view (state draft)."""
        plan = plan or {}
        version = "1.7" if {"limits", "start_at"} & set(plan) else "1.5"
        if _plan_names(plan, ("aggregate",)):
            version = "1.8"
        if _plan_names(plan, MAPS):
            version = "1.9"
        if any(_live(r) for r in _plan_requests(plan)):
            version = "1.10"
        return self._call(context, "create_plan", version=version,
                          plan=plan)

    def get_plan(self, context, plan_id):
        return self._call(context, "get_plan", version="1.5",
                          plan_id=plan_id)

    def list_plans(self, context, filters=None):
        return self._call(context, "list_plans", version="1.5",
                          filters=filters or {})

    def validate_plan(self, context, plan_id):
        return self._call(context, "validate_plan", version="1.5",
                          plan_id=plan_id)

    def start_plan(self, context, plan_id):
        return self._call(context, "start_plan", version="1.5",
                          plan_id=plan_id)

    def cancel_plan(self, context, plan_id):
        return self._call(context, "cancel_plan", version="1.5",
                          plan_id=plan_id)

    def delete_plan(self, context, plan_id):
        return self._call(context, "delete_plan", version="1.5",
                          plan_id=plan_id)

    def retry_plan(self, context, plan_id):
        return self._call(context, "retry_plan", version="1.5",
                          plan_id=plan_id)

    def report_progress(self, context, migration_id, progress):
        """Fire-and-forget: a copy must not wait on the conductor."""
        self.client.prepare(version="1.0").cast(
            context,
            "report_progress",
            migration_id=migration_id,
            progress=progress,
        )


def _plan_requests(plan):
    """A plan's defaults and VM overrides that are dicts."""
    vms = plan.get("vms") if isinstance(plan.get("vms"), list) else []
    requests = [plan.get("defaults")] + [
        vm.get("overrides") for vm in vms if isinstance(vm, dict)]
    return [r for r in requests if isinstance(r, dict)]


def _plan_names(plan, fields):
    """A plan whose defaults or a VM's overrides set one of ``fields``."""
    return any(set(fields) & set(r) for r in _plan_requests(plan))


def _live(request):
    """A request (or a plan's defaults or overrides) of 1.10."""
    return request.get("mode") == LIVE or "live_fallback" in request
