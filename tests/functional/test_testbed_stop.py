"""tools/testbed/process.stop_together on real child processes: every
child gets its SIGTERM before the first one is waited for, so their
graceful exits overlap; one that ignores SIGTERM is SIGKILLed after its
stop_timeout and reaped."""

import os
import signal
import sys
import time

from tools.testbed import process

# Records when SIGTERM arrived, takes 1 s to "shut down", records the exit.
GRACEFUL = r"""
import signal, sys, time
log = sys.argv[1]
def term(signum, frame):
    with open(log, "a") as f:
        f.write("term %r\n" % time.time())
    time.sleep(1)
    with open(log, "a") as f:
        f.write("exit %r\n" % time.time())
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
open(log + ".ready", "w").close()
while True:
    time.sleep(0.05)
"""

STUBBORN = r"""
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1] + ".ready", "w").close()
while True:
    time.sleep(0.05)
"""


class _Child(process.Child):
    def __init__(self, code, log, stop_timeout=10):
        self.log = log
        self.stop_timeout = stop_timeout
        self.spawn([sys.executable, "-c", code, log])

    def wait_ready(self):
        deadline = time.monotonic() + 20
        while not os.path.exists(self.log + ".ready"):
            assert self.proc.poll() is None, "child exited early"
            assert time.monotonic() < deadline, "child never got ready"
            time.sleep(0.02)

    def events(self):
        with open(self.log) as f:
            return dict(line.split() for line in f)


def test_children_get_their_sigterm_before_any_is_waited_for(tmp_path):
    children = [_Child(GRACEFUL, str(tmp_path / ("child%d" % i)))
                for i in range(3)]
    try:
        for child in children:
            child.wait_ready()
        process.stop_together(children)
    finally:
        for child in children:
            process.stop(child.proc, timeout=1)
    events = [c.events() for c in children]
    first_exit = min(float(e["exit"]) for e in events)
    # Each takes 1 s after its SIGTERM: one after another, the second
    # would get its SIGTERM only after the first exited.
    assert all(float(e["term"]) < first_exit for e in events), events
    assert all(c.proc.returncode == 0 for c in children)


def test_a_child_ignoring_sigterm_is_killed_after_its_timeout(tmp_path):
    stubborn = _Child(STUBBORN, str(tmp_path / "stubborn"), stop_timeout=1)
    graceful = _Child(GRACEFUL, str(tmp_path / "graceful"))
    try:
        stubborn.wait_ready()
        graceful.wait_ready()
        process.stop_together([stubborn, graceful])
    finally:
        process.stop(stubborn.proc, timeout=1)
        process.stop(graceful.proc, timeout=1)
    assert stubborn.proc.returncode == -signal.SIGKILL
    assert graceful.proc.returncode == 0
    assert "exit" in graceful.events()
