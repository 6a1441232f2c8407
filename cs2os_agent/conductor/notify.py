"""cs2os.migration.{create,start,end,error} notifications on the bus.

Each notification's payload is a versioned object, in the shape of Nova's
versioned notifications::

    {"cs2os_object.name": "MigrationPayload",
     "cs2os_object.namespace": "cs2os",
     "cs2os_object.version": "1.2",
     "cs2os_object.data": {<exactly the fields below>}}

MigrationPayload 1.2, every field always present (None when unknown):

==================  =====================================================
id                  the migration's id
state               queued, running, cancelling, succeeded, failed,
                    cancelled
step                the step in progress (or done / the failed step)
mode                cold, warm or live
source_ref          the CloudStack VM as requested (id or name)
source_vm_id        the CloudStack VM's id, once validated
source_vm_name      the CloudStack VM's name, once validated
target_host         the compute host asked for (None: Nova's choice)
compute_host        the compute host the server landed on
flavor              the flavor asked for (None: the smallest that fits)
delete_source       whether the CloudStack VM is destroyed at the end
bytes_done          bytes copied so far
bytes_total         bytes to copy
error               the failure's message, or None
server_id           the Nova server made for it, or None
image_id            the Glance image it boots from, or None
source_deleted      True once the CloudStack VM was destroyed
rolled_back         what a rollback undid ([] when nothing)
user_id             who asked for it
project_id          the asker's project
request_id          the request that created it
created_at          ISO 8601 timestamps (UTC) of the record
updated_at
started_at
finished_at
target_project_id   (1.1) the Keystone project the server lands in, once
                    validated
committed           (1.1) True once the migrated disk is the guest's (no
                    rollback from there)
warnings            (1.1) what a successful migration left for a look
                    (the result's warnings, their messages)
aggregate           (1.2) the Nova host aggregate asked for instead of a
                    host (target_host: the host chosen from it), or None
bytes_moved         (1.2) every byte moved across clouds so far: the
                    template upload and each finished copy (db/moved.py)
==================  =====================================================

Left out on purpose: the lease (``conductor``, ``lease_until``), the
request's bookkeeping (``options``), what was discovered at the source
(``source``: CloudStack host names, pool paths) and the ``resources`` and
``result`` records beyond the summary above, and the events.  A new field
is a new minor version; removing or changing one is a new major version.

The notification's context is built afresh: the requester's user, project
and request ids only (``CONTEXT_FIELDS``), never the caller's token, its
service token or anything else of the caller's RequestContext.
"""

import oslo_messaging as messaging

from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import rpc

NAMESPACE = "cs2os"
PAYLOAD_NAME = "MigrationPayload"
# 1.1: target_project_id, committed, warnings; 1.2: aggregate,
# bytes_moved.
PAYLOAD_VERSION = "1.2"

# The record's own columns, copied as they are.
RECORD_FIELDS = (
    "id", "state", "step", "mode", "source_ref", "source_vm_id",
    "source_vm_name", "target_host", "compute_host", "flavor",
    "delete_source", "bytes_done", "bytes_total", "error",
    "user_id", "project_id", "request_id",
    "created_at", "updated_at", "started_at", "finished_at",
    "target_project_id", "committed", "bytes_moved",
)
# The summary of what was made and done.
SUMMARY_FIELDS = ("server_id", "image_id", "source_deleted", "rolled_back",
                  "warnings", "aggregate")
FIELDS = RECORD_FIELDS + SUMMARY_FIELDS

# What the notification's context carries, all of it.
CONTEXT_FIELDS = ("user", "user_id", "project", "project_id", "request_id",
                  "global_request_id")


def migration_payload(migration):
    """The versioned MigrationPayload of a migration record (a dict)."""
    resources = migration.get("resources") or {}
    result = migration.get("result") or {}
    data = {name: _primitive(migration.get(name)) for name in RECORD_FIELDS}
    data.update(
        server_id=resources.get("server_id") or result.get("server_id"),
        image_id=resources.get("image_id"),
        source_deleted=bool(result.get("source_deleted")),
        rolled_back=[str(m) for m in result.get("rolled_back") or []],
        warnings=[str(w.get("message")) for w in result.get("warnings") or []
                  if isinstance(w, dict)],
        aggregate=(migration.get("options") or {}).get("aggregate"),
    )
    return {
        "cs2os_object.name": PAYLOAD_NAME,
        "cs2os_object.namespace": NAMESPACE,
        "cs2os_object.version": PAYLOAD_VERSION,
        "cs2os_object.data": data,
    }


def notification_context(context, migration):
    """A new context: the requester's ids and the request id, nothing else.

    The user and project are the migration's (who asked for it), so that
    start/end/error, sent from the conductor's own admin context, name the
    same requester as create; the request id is the creating request's.
    """
    return _NotificationContext(
        user_id=migration.get("user_id"),
        project_id=migration.get("project_id"),
        request_id=(migration.get("request_id")
                    or getattr(context, "request_id", None)),
        global_request_id=getattr(context, "global_request_id", None),
        is_admin=False,
        # Not the thread's current context: logging keeps the caller's.
        overwrite=False,
    )


class _NotificationContext(cs2os_context.RequestContext):
    """Built by notification_context() from ids only: nothing to redact.

    oslo.messaging (>= 17) sends ``redacted_copy()`` of a context; the
    inherited one would make the copy the thread's current context.
    """

    def redacted_copy(self, **kwargs):
        return self


class NotificationSerializer(rpc.RequestContextSerializer):
    """Sends CONTEXT_FIELDS of the context and nothing else."""

    def serialize_context(self, context):
        if context is None or isinstance(context, dict):
            values = dict(context or {})
            values.setdefault("user", values.get("user_id"))
        else:
            values = context.to_dict()
            values["user_id"] = context.user_id
        return {k: values.get(k) for k in CONTEXT_FIELDS}


class MigrationNotifier:
    def __init__(self, conf, host, transport=None):
        transport = transport or messaging.get_notification_transport(conf)
        # Shared with the plans' notifier (conductor/plan_notify.py).
        self.transport = transport
        self._notifier = messaging.Notifier(
            transport,
            publisher_id="cs2os-conductor.%s" % host,
            serializer=NotificationSerializer(),
        )

    def emit(self, context, what, migration):
        """``context``: the caller's; only its ids are used (see above)."""
        payload = migration_payload(migration)
        safe = notification_context(context, migration)
        event_type = "cs2os.migration.%s" % what
        if what == "error":
            self._notifier.error(safe, event_type, payload)
        else:
            self._notifier.info(safe, event_type, payload)


def _primitive(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
