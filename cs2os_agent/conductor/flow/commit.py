"""The start step: the commit point, then Nova starts the server.

Before the commit the CloudStack VM must still be down; the commit is
recorded before Nova is asked to start the server, and from then on the
guest is Nova's: nothing rolls back and the source never starts again.
"""

import time

from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor.flow import source


def start(ctx):
    """The commit: the CloudStack VM must still be stopped, then the
    point of no return is recorded, then Nova starts the server."""
    resources = ctx.resources
    if not ctx.committed:
        source.require_source_stopped(ctx)
    request_start(ctx)
    server = ctx.openstack.wait_server(resources["server_id"],
                                              "ACTIVE")
    ctx.result(server_id=server.id, host=resources["host"],
               server_status=server.status)


def start_warm(ctx):
    """The commit: the source must still be down (shut down, or frozen
    after a forced cutover), the point of no return is recorded, then
    Nova starts the server on the migrated disk; the downtime ends here."""
    if not ctx.committed:
        source.require_source_down(ctx)
    requested_at = time.time()
    request_start(ctx)
    if not ctx.resources.get("start_requested_at"):
        ctx.resource(start_requested_at=requested_at)
    server = ctx.openstack.wait_server(ctx.resources["server_id"],
                                              "ACTIVE")
    res = ctx.resources
    downtime = None
    if res.get("source_down_at") and res.get("start_requested_at"):
        downtime = round(res["start_requested_at"] - res["source_down_at"],
                         3)
    ctx.result(server_id=server.id, host=res["host"],
               server_status=server.status, downtime_seconds=downtime)
    ctx.event("start", "server %s started on the migrated disk; the source "
              "stopped serving (%s) %.2f s before the start was requested"
              % (server.id, "frozen"
                 if res.get("cutover_method") == states.FORCE
                 else "shut down", downtime or 0.0))


def request_start(ctx):
    """Commit, then ask Nova to start the server on the migrated disk.

    The commit is recorded first: a conductor that dies during the call
    cannot know whether Nova started the guest, so from then on it counts
    as started.  Only a start Nova refused outright takes it back.
    """
    ctx.commit()
    try:
        ctx.openstack.request_start(ctx.resources["server_id"])
    except exception.StartRefused:
        ctx.uncommit()
        raise
