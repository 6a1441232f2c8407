"""Progress, cancellation and bandwidth limit for one running copy."""

import threading
import time

from oslo_log import log as logging

from cs2os_agent.common import exception

LOG = logging.getLogger(__name__)


class TransferMonitor:
    """Called by a transport after every chunk it moves.

    ``advance(n)`` is the only hot-path call: it raises
    :class:`~cs2os_agent.common.exception.MigrationCancelled` once
    :meth:`cancel` was called, sleeps as long as needed to stay under the
    bandwidth limit, and hands a progress dict to ``report`` at most every
    ``interval`` seconds (and once more from :meth:`finish`).
    """

    def __init__(
        self,
        migration_id,
        step,
        total,
        report=None,
        interval=5.0,
        max_bandwidth_mbps=0,
        cancel_event=None,
        clock=time.monotonic,
        sleep=time.sleep,
    ):
        self.migration_id = migration_id
        self.step = step
        self.total = total
        self.done = 0
        self._report = report
        self._interval = interval
        self._limit_bps = max_bandwidth_mbps * 1_000_000 / 8
        self._clock = clock
        self._sleep = sleep
        self._cancelled = (
            cancel_event if cancel_event is not None else threading.Event()
        )
        self._started = clock()
        self._last_report = self._started

    def cancel(self):
        self._cancelled.set()

    def check_cancelled(self):
        if self._cancelled.is_set():
            raise exception.MigrationCancelled(
                migration_id=self.migration_id, step=self.step
            )

    def advance(self, nbytes):
        self.check_cancelled()
        self.done += nbytes
        now = self._clock()
        if self._limit_bps:
            # Sleep until the average rate since the start is back under
            # the limit; an average (not a per-chunk) bound keeps long
            # copies at the limit even when single chunks are bursty.
            ahead = self.done / self._limit_bps - (now - self._started)
            if ahead > 0:
                self._sleep(ahead)
                now = self._clock()
        if now - self._last_report >= self._interval:
            self._last_report = now
            self._emit(now)

    def finish(self):
        self._emit(self._clock())

    def snapshot(self, now=None):
        now = self._clock() if now is None else now
        elapsed = max(now - self._started, 1e-9)
        return {
            "migration_id": self.migration_id,
            "step": self.step,
            "bytes_done": self.done,
            "bytes_total": self.total,
            "rate_bps": int(self.done / elapsed),
            "elapsed": round(elapsed, 3),
        }

    def _emit(self, now):
        progress = self.snapshot(now)
        LOG.info(
            "Migration %(migration_id)s %(step)s: %(bytes_done)d of "
            "%(bytes_total)d bytes, %(rate_bps)d B/s",
            progress,
        )
        if self._report is not None:
            try:
                self._report(progress)
            except Exception:
                # Progress is advisory: a broken report channel must not
                # fail a copy that is otherwise going well.
                LOG.warning(
                    "Migration %s: progress report failed",
                    self.migration_id,
                    exc_info=True,
                )
