"""Watching a migration: the poll loop and the progress line for --wait.

Nothing here reads a clock, sleeps or asks whether stderr is a terminal
on its own: callers pass ``clock``, ``sleep`` and ``tty`` (the commands
pass the real ones), so tests drive it step by step.
"""

import shutil
import time

from osc_lib import exceptions as osc_exc

from cs2os_agent.common import states
from cs2os_agent.osc import client

MIB = 1024**2
GIB = 1024**3
BAR_WIDTH = 10
# A non-terminal stream (a log, CI) gets a line per step or state change,
# and for progress alone at most one line per this many seconds.
LINE_INTERVAL = 5.0
# How long the API may be unreachable (restart, proxy hiccup) before
# watching gives up; the migration itself does not depend on us.
UNREACHABLE_GRACE = 60.0
TRANSIENT_STATUSES = frozenset((502, 503, 504))
RESUME_HINT = (
    "Stopped watching migration %(id)s; it continues in the background. "
    "Watch it again with: openstack cs2os migration show --wait %(id)s"
)


def format_size(nbytes):
    if nbytes >= GIB:
        return "%.1f GiB" % (nbytes / GIB)
    return "%.1f MiB" % (nbytes / MIB)


def format_rate(bps):
    return "%s/s" % format_size(bps)


def format_duration(seconds):
    """``M:SS`` below an hour, ``H:MM:SS`` from an hour on."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return "%d:%02d:%02d" % (hours, minutes, secs)
    return "%d:%02d" % (minutes, secs)


def _figures(record):
    """The current step's copy figures: the API's ``progress`` (none for
    a step that copies nothing); the record's own from an older API."""
    if isinstance(record.get("progress"), dict):
        return record["progress"]
    return record


def percent(record):
    """Whole percent copied, or None when the total is not known yet."""
    record = _figures(record)
    done, total = record.get("bytes_done") or 0, record.get("bytes_total")
    if not total or total <= 0:
        return None
    return max(0, min(100, int(100 * done // total)))


def eta_seconds(record):
    """Seconds left at the current rate, or None if that is unknowable."""
    record = _figures(record)
    done, total = record.get("bytes_done"), record.get("bytes_total")
    rate = record.get("rate_bps")
    if done is None or not total or not rate or rate <= 0:
        return None
    return max(0.0, (total - done) / rate)


def _state_step(record):
    progress = record.get("progress") or {}
    place = ("(step %d of %d)" % (progress["step_number"], progress["steps"])
             if progress.get("step_number") and record.get("state") in (
                 states.RUNNING, states.CANCELLING) else None)
    return " ".join(
        str(x) for x in (record.get("state"), record.get("step"), place)
        if x)


def _amount(record):
    record = _figures(record)
    done, total = record.get("bytes_done"), record.get("bytes_total")
    if total:
        return "%s / %s" % (format_size(done or 0), format_size(total))
    return format_size(done) if done else ""


def _rate_and_eta(record):
    # Only a running copy has a meaningful speed; a finished or queued
    # one would show a stale rate and a zero or endless ETA.
    if record.get("state") != states.RUNNING:
        return "", ""
    rate = _figures(record).get("rate_bps")
    eta = eta_seconds(record)
    return (format_rate(rate) if rate else "",
            "ETA %s" % format_duration(eta) if eta is not None else "")


def describe(record):
    """One line of text for a record: state, step, bytes, rate, ETA."""
    amount = _amount(record)
    pct = percent(record)
    if pct is not None:
        amount += " (%d%%)" % pct
    rate, eta = _rate_and_eta(record)
    return ", ".join(
        p for p in (_state_step(record), amount, rate, eta) if p)


def bar(pct, width=BAR_WIDTH):
    filled = pct * width // 100
    return "[%s%s]" % ("#" * filled, "." * (width - filled))


def tty_line(record):
    """The redrawn line: what matters most comes first, as the end of a
    line too long for the terminal is cut off."""
    pct = percent(record)
    head = [bar(pct), "%3d%%" % pct] if pct is not None else []
    rate, eta = _rate_and_eta(record)
    return "  ".join(p for p in head + [
        eta, rate, _amount(record), _state_step(record)] if p)


class Reporter:
    """Writes progress to a stream: a redrawn line on a TTY, else lines."""

    def __init__(self, stream, tty=None, width=None, clock=time.monotonic,
                 line_interval=LINE_INTERVAL):
        self._stream = stream
        if tty is None:
            tty = getattr(stream, "isatty", lambda: False)()
        self._tty = tty
        self._width = width or shutil.get_terminal_size().columns
        self._clock = clock
        self._line_interval = line_interval
        self._start = clock()
        self._drawn = 0
        self._last_key = None
        self._last_bytes = None
        self._last_time = None

    def update(self, record):
        if self._tty:
            self._redraw(record)
        else:
            self._maybe_print(record)

    def note(self, text):
        """A message of its own line, not overwritten by the next redraw."""
        self.finish()
        self._write(text + "\n")

    def finish(self):
        """End a redrawn line so what follows starts on a fresh one."""
        if self._drawn:
            self._write("\n")
            self._drawn = 0

    def _redraw(self, record):
        line = tty_line(record)
        # A line that wraps cannot be redrawn with a carriage return.
        line = line[:max(self._width - 1, 1)]
        self._write("\r" + line.ljust(self._drawn))
        self._drawn = max(len(line), 1)

    def _maybe_print(self, record):
        now = self._clock()
        key = (record.get("state"), record.get("step"))
        moved = record.get("bytes_done") != self._last_bytes
        due = (self._last_time is None
               or now - self._last_time >= self._line_interval)
        if key == self._last_key and not (moved and due):
            return
        self._last_key = key
        self._last_bytes = record.get("bytes_done")
        self._last_time = now
        self._write("[%s] %s\n" % (
            format_duration(now - self._start), describe(record)
        ))

    def _write(self, text):
        self._stream.write(text)
        self._stream.flush()


def _transient(error):
    return isinstance(error, client.ApiUnreachable) or (
        isinstance(error, client.ApiError)
        and error.status in TRANSIENT_STATUSES
    )


def wait_for_migration(fetch, record, reporter, poll_interval=2.0,
                       timeout=None, clock=time.monotonic, sleep=time.sleep,
                       unreachable_grace=UNREACHABLE_GRACE):
    """Poll ``fetch(id)`` from ``record`` until a terminal state.

    Returns the terminal record, whatever the state.  Raises CommandError
    on timeout or when the API stays unreachable past the grace period.
    Ctrl-C stops watching only: the hint to resume is written and
    KeyboardInterrupt propagates (cliff exits 130).
    """
    migration_id = record["id"]
    deadline = None if timeout is None else clock() + timeout
    failing_since = None
    try:
        while True:
            reporter.update(record)
            if record.get("state") in states.FINAL:
                return record
            if deadline is not None and clock() >= deadline:
                raise osc_exc.CommandError(
                    "Timed out after %ss waiting for migration %s (state "
                    "%s, step %s); it continues in the background."
                    % (timeout, migration_id, record.get("state"),
                       record.get("step"))
                )
            delay = poll_interval
            if deadline is not None:
                delay = max(0.0, min(delay, deadline - clock()))
            sleep(delay)
            try:
                record = fetch(migration_id)
                failing_since = None
            except osc_exc.CommandError as e:
                if not _transient(e):
                    raise
                now = clock()
                if failing_since is None:
                    failing_since = now
                if now - failing_since > unreachable_grace:
                    raise
                reporter.note("%s; retrying" % e)
    except KeyboardInterrupt:
        reporter.note(RESUME_HINT % {"id": migration_id})
        raise
    finally:
        reporter.finish()


def raise_if_unsuccessful(record):
    """CommandError naming id, state and error unless it succeeded."""
    if record.get("state") == states.SUCCEEDED:
        return
    raise osc_exc.CommandError(
        "Migration %s %s at step %s: %s" % (
            record.get("id"), record.get("state"), record.get("step"),
            record.get("error") or "no error recorded",
        )
    )
