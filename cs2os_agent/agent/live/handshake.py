"""The live move split in two RPC calls: begin, then finish or abort.

:func:`.move.move` calls ``before_stream`` once B's QEMU waits for the
guest's state and before A's is sent.  Between ``begin_live_move`` and
``finish_live_move`` the conductor sets Nova's server ACTIVE while B is
paused (recipes/live-into-nova, "Nova caveats"), so the move runs on a
thread of its own and :meth:`MoveRun.gate` (its ``before_stream``) blocks
there until :meth:`MoveRun.release` says ``finish`` or ``abort``, or
``wait_seconds`` pass.  Anything but ``finish`` raises inside the move,
which undoes it: A' runs on, B is destroyed (shut off).
"""

import threading

from oslo_log import log as logging

from cs2os_agent.agent.live import errors
from cs2os_agent.agent.live import move
from cs2os_agent.common import exception

LOG = logging.getLogger(__name__)

FINISH, ABORT, EXPIRED = "finish", "abort", "expired"


class Closed(move._Failed):  # noqa: SLF001 - move's own undo path
    """The gate said no: move() undoes and raises LiveMoveFailed."""


class MoveRun(threading.Thread):
    """``run_move(before_stream)`` on a thread; ``on_done(self)`` after.

    ``result`` (the MoveResult) or ``error`` (what it raised) once it
    ended; ``decision``: how the gate was left (None: never reached).
    """

    def __init__(self, migration_id, run_move, wait_seconds, on_done=None):
        super().__init__(name="live-move-%s" % migration_id, daemon=True)
        self.migration_id = migration_id
        self.wait_seconds = wait_seconds
        self._run_move, self._on_done = run_move, on_done
        self._lock = threading.Lock()
        self._decided = threading.Event()
        self.waiting = threading.Event()  # B's QEMU waits at the gate
        self.ended = threading.Event()
        self.decision = None
        self.result = self.error = None

    def gate(self):
        self.waiting.set()
        if not self._decided.wait(self.wait_seconds):
            self.release(EXPIRED)
        if self.decision == FINISH:
            return
        if self.decision == ABORT:
            raise Closed("the conductor aborted the move")
        raise Closed("neither finish nor abort came within %s s"
                     % self.wait_seconds)

    def release(self, decision):
        """Open the gate with ``decision``; False if one was made before
        (the first one stands)."""
        with self._lock:
            if self.decision is not None:
                return False
            self.decision = decision
        self._decided.set()
        return True

    def run(self):
        try:
            self.result = self._run_move(self.gate)
        except Exception as exc:  # noqa: BLE001 - kept for the caller
            self.error = exc
        finally:
            self.ended.set()
            if self._on_done is not None:
                try:
                    self._on_done(self)
                except Exception:  # noqa: BLE001 - the record is best effort
                    LOG.exception("Migration %s: cannot record the live "
                                  "move's outcome", self.migration_id)

    def wait_started(self, poll=0.05):
        """Until B waits at the gate (True) or the move ended (False)."""
        while not self.waiting.is_set():
            if self.ended.wait(poll):
                return self.waiting.is_set()
        return True


_OUTCOME_ERRORS = {"failed": exception.LiveFailed,
                   "aborted": exception.LiveFailed,
                   "expired": exception.LiveFailed,
                   "refused": exception.LiveRefused,
                   "incomplete": exception.LiveIncomplete}


def outcome(run):
    """The ended move's outcome for the record (:mod:`.state`)."""
    if run.error is None:
        r = run.result
        return {"outcome": "running", "result": {
            "state": "running", "downtime_ms": r.downtime_ms,
            "migration_ms": r.migration_ms,
            "switch_seconds": round(r.switch_seconds, 3),
            "stream_bytes": r.stream_bytes}}
    err = errors.for_rpc(run.error)
    if isinstance(err, exception.LiveIncomplete):
        name = "incomplete"
    elif isinstance(err, exception.LiveRefused):
        name = "refused"
    elif run.decision == ABORT:
        name = "aborted"
    elif run.decision == EXPIRED:
        name = "expired"
    else:
        name = "failed"
    return {"outcome": name, "error": str(run.error)}


def raise_recorded(record):
    """Raise a recorded failure again, as the first call did."""
    raise _OUTCOME_ERRORS[record["outcome"]](
        reason=record.get("error") or record["outcome"])
