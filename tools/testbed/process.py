"""Child processes of the test bed: each in a process group of its own,
each ended by its PID.

The tests, the sandbox's CloudStack and the benchmarks run servers (sshd,
nfs-ganesha, rpcbind, MariaDB, PostgreSQL, RabbitMQ) and the cs2os
services as children.  They start here in a new session, so a Ctrl-C at
the terminal reaches the test runner alone, whose teardown then stops the
children in order; and a child that forks helpers of its own
(rabbitmq-server's Erlang VM) can be ended with them, by its group.
Stopping is SIGTERM, a wait, SIGKILL once the wait runs out, and a wait
for the exit status (no zombie left): only what was started here, never
by name.
"""

import os
import signal
import socket
import subprocess


def free_port(host="127.0.0.1"):
    """A TCP port nothing listens on now (it may be taken before use)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def gone(pid):
    """Whether process ``pid`` has ended; a child of ours that ended but
    was not reaped yet (a zombie) counts as ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


def spawn(argv, **popen_args):
    """``subprocess.Popen`` in a new session: its own process group."""
    return subprocess.Popen(argv, start_new_session=True, **popen_args)


def _signal(proc, signum, group):
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)


def stop(proc, timeout=10, group=False):
    """End ``proc`` (a Popen of ours, or None; nothing if it ended).

    SIGTERM, up to ``timeout`` seconds to exit, then SIGKILL; waited for.
    ``group``: signal its whole process group (spawn made it the leader)
    and SIGKILL what is left of the group once the leader is gone.
    """
    if proc is None or proc.poll() is not None:
        return
    _signal(proc, signal.SIGTERM, group)
    _reap(proc, timeout, group)


def _reap(proc, timeout, group):
    """Wait up to ``timeout`` s for a SIGTERMed ``proc``, then SIGKILL."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL, group)
        proc.wait()
    if group:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # nothing left


def stop_together(children):
    """Stop several ``Child`` objects at once: each gets its SIGTERM
    first, then each is waited for (its ``stop_timeout``, then SIGKILL),
    so their graceful exits overlap instead of adding up (the test
    session ends ~15 agents this way)."""
    signalled = []
    for child in children:
        proc = child.proc
        if proc is not None and proc.poll() is None:
            _signal(proc, signal.SIGTERM, child.stop_group)
            signalled.append(child)
    for child in signalled:
        _reap(child.proc, child.stop_timeout, child.stop_group)


def kill(proc):
    """SIGKILL ``proc`` (a crash, as tests need one) and reap it."""
    proc.kill()
    proc.wait()


class Child:
    """A server or service of the test bed that runs as one child process.

    Subclasses start it with :meth:`spawn` and may set how long it gets to
    exit on SIGTERM (``stop_timeout``) and whether its own children go
    with it (``stop_group``).
    """

    stop_timeout = 10
    stop_group = False
    proc = None

    def spawn(self, argv, **popen_args):
        self.proc = spawn(argv, **popen_args)
        return self.proc

    def stop(self):
        stop(self.proc, self.stop_timeout, self.stop_group)

    def kill(self):
        kill(self.proc)
