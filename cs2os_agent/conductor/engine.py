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

A queued migration with a start time (conductor/schedule.py) is claimed
by nobody before then: submit() leaves it and sets a timer for that time
(adopt() at each renewal finds it too, on any conductor).
"""

import concurrent.futures
import datetime
import threading

from oslo_log import log as logging
from oslo_utils import timeutils

from cs2os_agent.common import exception
from cs2os_agent.common import states
from cs2os_agent.conductor import schedule
from cs2os_agent.conductor.flow import runner

LOG = logging.getLogger(__name__)


class Engine:
    def __init__(self, db, name, workers, lease_seconds, make_context):
        self.db = db
        self.name = name
        self.lease = datetime.timedelta(seconds=lease_seconds)
        self._make_context = make_context
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="migration")
        self._lock = threading.Lock()
        self._running = {}  # migration id -> FlowContext
        self._epochs = {}  # migration id -> the epoch of our claim
        self._stop = threading.Event()
        self._renewer = None
        self._timers = {}  # start time -> the Timer that adopts then

    def start(self):
        self.adopt()
        self._renewer = threading.Thread(target=self._renew_loop,
                                         name="lease-renewer", daemon=True)
        self._renewer.start()

    def stop(self):
        self._stop.set()
        for ctx in list(self._running.values()):
            # Ends at the next step boundary; the record stays "running"
            # and the next conductor resumes it.
            if ctx is not None:
                ctx.request_stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()

    def submit(self, migration_id):
        with self._lock:
            if migration_id in self._running:
                return False  # (before any read: adopt() asks often)
        if self._not_yet(migration_id):
            return False
        with self._lock:
            if migration_id in self._running:
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

    def _not_yet(self, migration_id):
        """True (and a timer set) if it waits for its start time."""
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
        """Claim and run every unfinished migration nobody runs."""
        for migration_id in self.db.claimable(self.name, timeutils.utcnow(),
                                              states.ACTIVE):
            if self.submit(migration_id):
                LOG.info("Resuming migration %s", migration_id)

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

    def _renew_loop(self):
        period = self.lease.total_seconds() / 3
        while not self._stop.wait(period):
            try:
                self._renew()
                self.adopt()
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
