"""A migration placed on a Nova host aggregate instead of a host.

A request's ``aggregate`` (name, id or uuid) stands for its hosts: validate
finds which of them can take the migration now (nova-compute enabled and
up, a cs2os-agent answering), and admission (flow/admission.py) picks one
of those with its slots in one transaction (db/placement.py).  From then
on the migration's target_host is that host, as if the request had named
it: the server is booted there and its agent does the copy.
"""

import collections
from concurrent import futures

from cs2os_agent.common import exception
from cs2os_agent.openstack import aggregates

AGENT_TIMEOUT = 10
# Hosts whose agent is asked at once (each waits at most AGENT_TIMEOUT).
AGENT_WORKERS = 8

Placement = collections.namedtuple("Placement", "name hosts usable unusable")
Placement.__doc__ = """The aggregate ``name``, all its ``hosts``, the
``usable`` ones (sorted), and {host: why not} of the others."""


def requested(migration):
    """The aggregate a migration record asks for, else None."""
    return (migration.get("options") or {}).get("aggregate")


def survey(ctx, ref, agents=True):
    """The Placement of aggregate ``ref``; Invalid when Nova has no such
    aggregate.  ``agents``: ask each up host's cs2os-agent too."""
    conn = ctx.clients.openstack.conn
    name, hosts = aggregates.find(conn, ref)
    unusable = {h: why for h, why in
                aggregates.compute_states(conn, hosts).items() if why}
    up = [h for h in hosts if h not in unusable]
    if agents and up:
        for host, why in _agents(ctx, up).items():
            if why:
                unusable[host] = why
    usable = sorted(h for h in hosts if h not in unusable)
    return Placement(name, hosts, usable, unusable)


def _agents(ctx, hosts):
    """{host: why its agent does not answer, or None}, asked at once."""
    def ask(host):
        try:
            ctx.clients.agent.get_agent_info(ctx.admin_context, host,
                                             timeout=AGENT_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any failure: no agent
            return "no cs2os-agent answers (%s)" % type(exc).__name__
        return None
    with futures.ThreadPoolExecutor(min(AGENT_WORKERS, len(hosts))) as pool:
        return dict(zip(hosts, pool.map(ask, hosts), strict=True))


def describe_unusable(placement):
    return ", ".join("%s (%s)" % kv for kv in sorted(
        placement.unusable.items()))


def require(placement):
    """Invalid when ``placement`` has no host a migration can go to."""
    if not placement.hosts:
        raise exception.Invalid(
            reason="Nova host aggregate %s has no hosts" % placement.name)
    if not placement.usable:
        raise exception.Invalid(
            reason="no host of Nova host aggregate %s can take a migration:"
            " %s" % (placement.name, describe_unusable(placement)))
    return placement


def check(ctx, ref):
    """Validate's check: the usable Placement of aggregate ``ref`` (a
    warning event names the hosts left out), else Invalid."""
    placement = require(survey(ctx, ref))
    if placement.unusable:
        ctx.event("validate", "host aggregate %s: %d of %d hosts left out: "
                  "%s" % (placement.name, len(placement.unusable),
                          len(placement.hosts),
                          describe_unusable(placement)), kind="warning")
    return placement


def waiting_key(placement):
    """What a migration waiting for every host of the aggregate records
    as its waiting_for (and what a later VM of its plan waits behind)."""
    return "aggregate:%s" % placement.name
