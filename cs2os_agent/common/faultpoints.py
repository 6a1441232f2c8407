"""Named points where the fault suite kills a cs2os process.

The crash-point sweep (tests/faults) starts a conductor or agent with
CS2OS_CRASH_AT=<point> in its environment; when the process reaches that
point it SIGKILLs itself, as a power cut or the OOM killer would, and the
suite checks that a restarted process keeps the promise (README,
"Safety").  Without the variable this is one string comparison.

Points: ``<step>:before`` / ``<step>:after`` around each step of a flow
(its side effects), ``rollback:<undo step>:before`` / ``:after``, and
``agent:<method>:before`` / ``:after`` around the agent's RPC methods.
"""

import os
import signal

_ARMED = os.environ.get("CS2OS_CRASH_AT") or None


def reached(point):
    if _ARMED is not None and point == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
