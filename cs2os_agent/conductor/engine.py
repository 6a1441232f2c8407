"""Runs migrations on worker threads and keeps them claimed.

A conductor claims a migration in the database before running it and
renews the claim while it runs.  On start, and every renewal period, it
takes over migrations whose claim expired: those of a conductor that died,
its own earlier self included.  So a migration survives any conductor
restart, and several conductors can share one database.

Every claim has an epoch (db.api.claim): the flow writes and acts only
while the record still names this conductor at that epoch, so a conductor
that was paused or cut off past its lease cannot act next to the one that
took over (FlowContext.guard).

Queued work is shared: a conductor claims a migration only when one of
its ``workers`` is free to run it.  The one that received the request
claims it at once if it can; otherwise the record stays queued and
unclaimed, and every conductor's engine looks for such rows every
``claim_interval`` seconds (and as soon as one of its own migrations
ends), oldest first and a plan's VMs in plan order, so whichever
conductor has a free worker takes the next one.  The claim (one UPDATE
that bumps the epoch) lets exactly one of them run it.

A worker stays taken while its migration waits for a slot
(flow/admission.py) or a cutover window (flow/window.py): ``workers``
caps what one conductor has in flight, waiting included; start() warns
when it is below a [conductor] max_* limit.

A queued migration with a start time (conductor/schedule.py) is claimed
by nobody before then: the claim poll skips it (its options are in the
rows it reads) and a timer looks again at that time.

When a plan's migration ends here, and every renewal period for every
running plan, the engine brings the plan's state and event log up to
date (conductor/plan_watch.py): a plan nobody looks at ends too.
"""

import concurrent.futures
import datetime
import threading

from oslo_log import log as logging
from oslo_utils import timeutils

from cs2os_agent import conf
from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor import plan_watch
from cs2os_agent.conductor import schedule
from cs2os_agent.conductor.flow import admission
from cs2os_agent.conductor.flow import runner

LOG = logging.getLogger(__name__)

# Seconds between two looks for queued work another conductor received.
CLAIM_INTERVAL = 2


def capacity_warnings(options, workers):
    """Why ``workers`` keeps this conductor below a [conductor] max_*
    limit (``options``: that group), one sentence each."""
    said = []
    for name in admission.LIMIT_NAMES:
        limit = getattr(options, name, 0) or 0
        if limit > workers:
            said.append(
                "[conductor] workers = %d is below %s = %d: this conductor "
                "runs at most %d migrations at once, those waiting for a "
                "slot or a cutover window included; more in flight needs "
                "more conductors on the database or a higher workers"
                % (workers, name, limit, workers))
    return said


class Engine:
    def __init__(self, db, name, workers, lease_seconds, make_context,
                 claim_interval=CLAIM_INTERVAL):
        self.db = db
        self.name = name
        self.workers = workers
        self.claim_interval = claim_interval
        self.lease = datetime.timedelta(seconds=lease_seconds)
        self._make_context = make_context
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="migration")
        self._lock = threading.Lock()
        self._running = {}  # migration id -> FlowContext
        self._epochs = {}  # migration id -> the epoch of our claim
        self._stop = threading.Event()
        self._renewer = None
        self._wake = threading.Event()  # look for queued work now
        self._timers = {}  # start time -> the Timer that adopts then

    def start(self):
        for warning in capacity_warnings(conf.CONF.conductor, self.workers):
            LOG.warning("%s", warning)
        self.adopt()
        self._renewer = threading.Thread(target=self._renew_loop,
                                         name="lease-renewer", daemon=True)
        self._renewer.start()
        threading.Thread(target=self._claim_loop, name="claim-poll",
                         daemon=True).start()

    def stop(self):
        self._stop.set()
        for ctx in list(self._running.values()):
            # Ends at the next step boundary; the record stays "running"
            # and the next conductor resumes it.
            if ctx is not None:
                ctx.request_stop()
        self._wake.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()

    def _free(self):
        """Workers not running (or about to run) a migration; the caller
        holds the lock."""
        return self.workers - len(self._running)

    def busy(self):
        """Workers taken now (for the metrics endpoint).  Without the
        lock: submit() holds it across a database claim, and a scrape
        must not wait for one; len() of a dict is one atomic read."""
        return len(self._running)

    def submit(self, migration_id, record=None):
        """Claim and run ``migration_id`` if a worker is free (True).

        Else it stays queued for any conductor with a free worker.
        ``record``: its row, if the caller has it (no read then)."""
        with self._lock:
            if migration_id in self._running or self._free() <= 0:
                return False  # (before any read: the poll asks often)
        if self._not_yet(migration_id, record):
            return False
        with self._lock:
            if migration_id in self._running or self._free() <= 0:
                return False
            now = timeutils.utcnow()
            epoch = self.db.claim(migration_id, self.name, now,
                                  now + self.lease)
            if epoch is None:
                return False
            self._running[migration_id] = None
            self._epochs[migration_id] = epoch
        self._pool.submit(self._run, migration_id)
        return True

    def _not_yet(self, migration_id, record=None):
        """True (and a timer set) if it waits for its start time."""
        if record is None:
            try:
                record = self.db.get_migration(migration_id)
            except exception.MigrationNotFound:
                return False  # the claim finds nothing either
        when = schedule.waiting_to_start(record)
        if when is None:
            return False
        with self._lock:
            if when not in self._timers and not self._stop.is_set():
                delay = (when - schedule.now()).total_seconds()
                timer = threading.Timer(max(delay, 0) + 0.5, self._at_start,
                                        args=(when,))
                timer.daemon = True
                self._timers[when] = timer
                timer.start()
        return True

    def _at_start(self, when):
        with self._lock:
            self._timers.pop(when, None)
        try:
            self.adopt()
        except Exception:
            LOG.exception("Starting migrations due at %s failed",
                          schedule.iso(when))

    def cancel(self, migration_id):
        """Ask the flow running ``migration_id`` here to stop."""
        ctx = self._running.get(migration_id)
        if ctx is not None:
            ctx.request_cancel()
            return ctx
        return None

    def adopt(self):
        """Claim and run unfinished migrations nobody runs, as many as
        workers are free: first those a conductor began (their claim
        expired), then queued ones, oldest first, a plan's in plan
        order."""
        with self._lock:
            if self._free() <= 0:
                return
        rows = self.db.claim_candidates(self.name, timeutils.utcnow(),
                                        states.ACTIVE)
        rows.sort(key=_claim_order)
        for row in rows:
            with self._lock:
                if self._free() <= 0:
                    return
            if self.submit(row["id"], row):
                LOG.info("%s migration %s", "Starting" if row["state"] ==
                         states.QUEUED else "Resuming", row["id"])

    def _claim_loop(self):
        """Every claim_interval, or when woken, look for work."""
        while not self._stop.is_set():
            self._wake.wait(self.claim_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.adopt()
            except Exception:
                LOG.exception("Looking for queued migrations failed")

    def _run(self, migration_id):
        owner = {"conductor": self.name,
                 "lease_epoch": self._epochs[migration_id]}
        try:
            migration = self.db.get_migration(migration_id)
            if migration["state"] == states.CANCELLING and \
                    migration["step"] == states.FIRST_STEP:
                # Nothing was done yet: nothing to undo.
                self.db.update_migration(
                    migration_id, {"state": states.CANCELLED},
                    expect=owner)
                return
            ctx = self._make_context(
                migration, (self.name, owner["lease_epoch"]))
            if migration["state"] == states.CANCELLING:
                ctx.request_cancel()
            with self._lock:
                self._running[migration_id] = ctx
            if self._stop.is_set():
                return
            runner.run(ctx)
        except Exception:
            LOG.exception("Migration %s: conductor error", migration_id)
        finally:
            with self._lock:
                self._running.pop(migration_id, None)
                self._epochs.pop(migration_id, None)
            # Release the claim only if the migration ended (and is still
            # ours); an unfinished one keeps it until it expires, then
            # anybody resumes it.
            current = self.db.get_migration(migration_id)
            if current["state"] not in states.ACTIVE:
                self.db.update_migration(migration_id, {"lease_until": None},
                                         expect=owner)
                # Its slots are free and so is a worker: this process's
                # waiters look again now, and the poll takes more work.
                admission.slots_freed()
                # A plan nobody looks at ends too (plan_watch.py).
                plan_watch.migration_ended(self.db, current)
            self._wake.set()

    def _renew_loop(self):
        period = self.lease.total_seconds() / 3
        while not self._stop.wait(period):
            try:
                self._renew()
                self.adopt()
                # What ended without a run ending here (plan_watch.py).
                plan_watch.sweep(self.db)
            except Exception:
                LOG.exception("Renewing migration claims failed")

    def _renew(self):
        with self._lock:
            claims = list(self._epochs.items())
        until = timeutils.utcnow() + self.lease
        for migration_id, epoch in claims:
            if self.db.renew(migration_id, self.name, epoch, until):
                continue
            # Another conductor claimed it (ours had lapsed): ours must
            # not act on it again.
            LOG.warning("%s", exception.LeaseLost(
                conductor=self.name, migration_id=migration_id, epoch=epoch))
            ctx = self._running.get(migration_id)
            if ctx is not None:
                ctx.fence()


def _claim_order(row):
    """Resumes first (they hold slots), then by age, then plan order."""
    position = (row.get("options") or {}).get("plan_position")
    return (row["state"] == states.QUEUED, row["created_at"],
            position if position is not None else -1)
