"""Idempotent agent calls that outlive an agent restart or a broker blip.

A call whose agent died (or whose reply the broker lost) times out; the
agent's methods used here finish what an earlier call began when called
again (sync_overlay resumes its checkpointed copy or says the first call
still runs, swap_disk and restore_disk find their work done, cleanup
removes what is left), so the flow waits for the agent to answer again
and repeats the call, for up to [conductor] agent_restart_timeout seconds,
instead of rolling back a migration that a restart would have carried on.
"""

import time

import oslo_messaging as messaging
from oslo_log import log as logging

from cs2os_agent.common import exception

LOG = logging.getLogger(__name__)

PING_TIMEOUT = 10
POLL = 2.0
BUSY_POLL = 10


def call(ctx, step, method, *args):
    """``ctx.clients.agent.<method>(admin, host, *args)``, repeated after
    a time-out once the agent answers again."""
    host = ctx.resources["host"]
    deadline = time.monotonic() + ctx.conf.conductor.agent_restart_timeout
    warned = False
    while True:
        ctx.guard()
        try:
            return getattr(ctx.clients.agent, method)(
                ctx.admin_context, host, *args)
        except messaging.MessagingTimeout as exc:
            if time.monotonic() > deadline:
                raise
            if not warned:
                ctx.event(step, "cs2os-agent on %s did not answer %s (%s): "
                          "calling it again once it answers"
                          % (host, method, exc), kind="warning")
                warned = True
            _wait_for_agent(ctx, step, host, deadline)


def call_waiting(ctx, step, method, *args):
    """:func:`call` for a copy: when the agent says this migration's own
    copy (started before a conductor restart) still runs, wait for it and
    call again to collect its result."""
    while True:
        try:
            return call(ctx, step, method, *args)
        except exception.MigrationBusy as exc:
            if exc.kwargs.get("owner") != ctx.id:
                raise
            ctx.check_cancelled(step)
            time.sleep(BUSY_POLL)


def _wait_for_agent(ctx, step, host, deadline):
    while True:
        ctx.check_cancelled(step)
        try:
            ctx.clients.agent.get_agent_info(ctx.admin_context, host,
                                             timeout=PING_TIMEOUT)
            return
        except messaging.MessagingTimeout:
            if time.monotonic() > deadline:
                return  # the call itself times out once more and fails
            LOG.info("Migration %s: waiting for cs2os-agent on %s",
                     ctx.id, host)
            time.sleep(POLL)
