"""cs2os.plan.<kind> notifications: every event of a plan's log, on the bus.

Each event plan_events.record() adds to a plan's log (and only one it
added: an ``ended`` another conductor recorded first is not sent again)
goes out as ``cs2os.plan.<kind>``, kind one of created, validated,
started, migration_created, skipped, not_started, ended, cancelled,
retried, done.  The payload is a versioned object in the envelope of the
migrations' (conductor/notify.py)::

    {"cs2os_object.name": "PlanEventPayload",
     "cs2os_object.namespace": "cs2os",
     "cs2os_object.version": "1.0",
     "cs2os_object.data": {<exactly the fields below>}}

PlanEventPayload 1.0, every field always present (None when it does not
apply):

==============  =========================================================
plan_id         the plan's id
plan_name       the plan's name
kind            the event's kind (as in the event type)
message         the event's message, as the plan's event log shows it
vm              the CloudStack VM as the plan names it (id or name), for
                an event of one VM
migration_id    the VM's migration, for migration_created and ended
created_at      when it happened, ISO 8601 (UTC); for ``ended``, when the
                migration finished
counts          for ``done`` only: how many of the plan's VMs ended in
                each state (succeeded, failed, cancelled, skipped,
                not_started; every one of them, 0 included)
==============  =========================================================

Priority ``info``, but ``warn`` for what an operator has to look at: the
``ended`` of a migration that failed and a ``not_started`` (a VM whose
migration could not be created).  A new field is a new minor version;
removing or changing one is a new major version.

The context is the one migrations' notifications carry: ids only (the
plan's owner's user and project, or the conductor's own when the plan
names none), never a caller's token.
"""

import oslo_messaging as messaging

from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import states
from cs2os_agent.conductor import notify

PAYLOAD_NAME = "PlanEventPayload"
PAYLOAD_VERSION = "1.0"
FIELDS = ("plan_id", "plan_name", "kind", "message", "vm", "migration_id",
          "created_at", "counts")
# The states a done plan's VMs are in (conductor/plan_view.py's FINAL).
DONE_STATES = states.FINAL + ("skipped", "not_started")
WARN, INFO = "warn", "info"


def priority(event, migration_state=None):
    """``warn`` for a failed migration's end and a VM not started."""
    if event["kind"] == "not_started":
        return WARN
    if event["kind"] == "ended" and migration_state == states.FAILED:
        return WARN
    return INFO


def plan_event_payload(plan, event):
    """The versioned PlanEventPayload of one event (a dict with kind,
    message, vm, migration_id, created_at and, for done, counts) of
    ``plan`` (its record: only its id and name are read)."""
    counts = event.get("counts")
    if counts is not None:
        # Every final state, so a consumer need not guess the keys.
        counts = dict({s: 0 for s in DONE_STATES}, **counts)
    created_at = event.get("created_at")
    data = {
        "plan_id": plan["id"],
        "plan_name": plan.get("name"),
        "kind": event["kind"],
        "message": event.get("message"),
        "vm": event.get("vm"),
        "migration_id": event.get("migration_id"),
        "created_at": (created_at.isoformat()
                       if hasattr(created_at, "isoformat") else created_at),
        "counts": counts,
    }
    return {
        "cs2os_object.name": PAYLOAD_NAME,
        "cs2os_object.namespace": notify.NAMESPACE,
        "cs2os_object.version": PAYLOAD_VERSION,
        "cs2os_object.data": data,
    }


def notification_context(plan):
    """Ids only: the plan's owner, else the conductor's own context's."""
    own = cs2os_context.get_admin_context()
    return notify.notification_context(own, {
        "user_id": plan.get("user_id") or own.user_id,
        "project_id": plan.get("project_id") or own.project_id})


class PlanNotifier:
    """What the conductor registers with plan_events.set_notifier()."""

    def __init__(self, conf, host, transport=None):
        transport = transport or messaging.get_notification_transport(conf)
        self._notifier = messaging.Notifier(
            transport,
            publisher_id="cs2os-conductor.%s" % host,
            serializer=notify.NotificationSerializer(),
        )

    def emit(self, plan, event, migration_state=None):
        """``migration_state``: for ``ended``, how the migration ended."""
        payload = plan_event_payload(plan, event)
        event_type = "cs2os.plan.%s" % event["kind"]
        if priority(event, migration_state) == WARN:
            self._notifier.warn(notification_context(plan), event_type,
                                payload)
        else:
            self._notifier.info(notification_context(plan), event_type,
                                payload)
