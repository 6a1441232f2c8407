"""A migration's host in a Nova host aggregate, chosen with its slots.

A request that names an aggregate instead of a host gets its host at
admission (conductor/flow/placement.py): among the aggregate's usable
hosts, the one whose slots are all free and that has the fewest active
migrations targeting it (ties: name order).  The host is written as the
migration's target_host in the same transaction that inserts its slots,
so a crash leaves either both or neither: never a slot on one host and
target_host naming another, nor a target_host without its slot.

Two conductors choosing at once cannot both take a host's last slot:
the slot's primary key refuses the second insert, its whole transaction
(slots and target_host) rolls back, and it chooses again (a SlotRace once
the tries are spent).
"""

import sqlalchemy as sa

from cs2os_agent.common import states
from cs2os_agent.db import api as db_api
from cs2os_agent.db import models

COMPUTE = "compute:"
# A lost race is tried again at once: another host may have room.
RACE_TRIES = 3


class Fenced(Exception):
    """The migration is no longer this conductor's claim (``expect``
    no longer matches): nothing was written."""


class AllFull(Exception):
    """No candidate host had every slot free; ``blocked``: {host: the
    resource that had none}, in the order the hosts were tried."""

    def __init__(self, blocked):
        super().__init__(blocked)
        self.blocked = blocked


def in_flight(session, hosts, migration_id):
    """{host: active migrations targeting it} but ``migration_id``."""
    m = models.Migration
    query = sa.select(m.target_host, sa.func.count()).where(
        m.target_host.in_(sorted(hosts)), m.state.in_(states.ACTIVE),
        m.id != migration_id).group_by(m.target_host)
    return {host: count for host, count in session.execute(query)}


def order(hosts, counts):
    """``hosts`` in the order they are tried: fewest in flight first,
    then by name."""
    return sorted(set(hosts), key=lambda h: (counts.get(h, 0), h))


def acquire(db, migration_id, hosts, limits_for, expect=None):
    """Take one slot of each resource ``limits_for(host)`` ({resource:
    limit}) names on one of ``hosts``, and record that host as the
    migration's target_host; return it.

    A migration holding a compute slot already keeps that host (a
    resumed or repeated admission), in or out of ``hosts``.  Raises
    AllFull when no host has room, Fenced when ``expect`` ({column:
    value}) no longer matches; a SlotRace (db/api.py) is returned when
    other conductors took the free slots first RACE_TRIES times running.
    """
    race = None
    for _ in range(RACE_TRIES):
        try:
            return _acquire(db, migration_id, hosts, limits_for, expect)
        except sa.exc.IntegrityError as exc:
            race = getattr(exc, "cs2os_trying", None)
    return db_api.SlotRace(*race) if race else db_api.SlotRace("?", 0)


@db_api.retry_on_deadlock
def _acquire(db, migration_id, hosts, limits_for, expect):
    slot = models.Slot
    with db._session.begin() as session:
        held = set(session.scalars(sa.select(slot.resource).where(
            slot.migration_id == migration_id)))
        kept = sorted(r[len(COMPUTE):] for r in held
                      if r.startswith(COMPUTE))
        tried = kept[:1] or order(hosts, in_flight(session, hosts,
                                                   migration_id))
        blocked = {}
        for host in tried:
            wanted = limits_for(host)
            free, full = db_api.free_slots(session, wanted, held)
            if full is not None:
                blocked[host] = full
                continue
            trying = None
            try:
                for resource, number in free:
                    trying = (resource, wanted[resource])
                    session.add(slot(resource=resource, number=number,
                                     migration_id=migration_id))
                    session.flush()
            except sa.exc.IntegrityError as exc:
                exc.cs2os_trying = trying
                raise
            _set_host(session, migration_id, host, expect)
            return host
        raise AllFull(blocked)


def _set_host(session, migration_id, host, expect):
    query = sa.update(models.Migration).where(
        models.Migration.id == migration_id)
    for key, value in (expect or {}).items():
        query = query.where(getattr(models.Migration, key) == value)
    count = session.execute(query.values(
        target_host=host, updated_at=models.utcnow())).rowcount
    if count != 1:
        raise Fenced(migration_id)  # rolls the slots back too
