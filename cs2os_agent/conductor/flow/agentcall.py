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

LOG = logging.getLogger(__name__)

PING_TIMEOUT = 10
POLL = 2.0


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
