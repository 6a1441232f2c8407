"""cs2os_agent.agent.live.reconnect, and the move's and the hop's undo
after a libvirtd restart killed their connections.

The real restarts are tests/functional/test_live_restarts.py; these fake
a dead connection and the one reopened after it, to reach the decisions
on demand: A found running again is the guest (failed, undone), B found
running is the guest (forward, A never resumed), a libvirtd that does
not come back leaves everything as it is (an operator's case).
"""

import libvirt
import pytest

from cs2os_agent import virt
from cs2os_agent.agent.live import errors
from cs2os_agent.agent.live import hop
from cs2os_agent.agent.live import move
from cs2os_agent.agent.live import reconnect

A_UUID = "11111111-1111-1111-1111-111111111111"
B_UUID = "22222222-2222-2222-2222-222222222222"
PAUSED, RUNNING, SHUTOFF = (libvirt.VIR_DOMAIN_PAUSED,
                            libvirt.VIR_DOMAIN_RUNNING,
                            libvirt.VIR_DOMAIN_SHUTOFF)


def _error(code, text):
    exc = libvirt.libvirtError(text)
    exc.err = (code, 0, text, 2, None, None, None, 0, 0)
    return exc


def _closed():
    return _error(libvirt.VIR_ERR_INTERNAL_ERROR, "client socket is closed")


class Dom:
    """A domain; on a dead connection (``conn.dead``) every call fails."""

    def __init__(self, conn, name, uuid, code, jobs=0):
        self.conn, self._name, self.uuid, self.code = conn, name, uuid, code
        self.jobs, self.calls = jobs, []
        conn.doms.append(self)

    def _call(self, name):
        if self.conn.dead:
            raise _closed()
        self.calls.append(name)

    def name(self):
        return self._name

    def UUIDString(self):  # noqa: N802 - libvirt's name
        return self.uuid

    def state(self):
        self._call("state")
        return [self.code, 0]

    def controlInfo(self):  # noqa: N802
        self._call("controlInfo")
        if self.jobs:
            self.jobs -= 1
            return [libvirt.VIR_DOMAIN_CONTROL_JOB, 0, 0]
        return [libvirt.VIR_DOMAIN_CONTROL_OK, 0, 0]

    def destroy(self):
        self._call("destroy")
        self.code = SHUTOFF

    def resume(self):
        self._call("resume")
        self.code = RUNNING


class Conn:
    def __init__(self, dead=False):
        self.dead, self.doms, self.closed = dead, [], False

    def getLibVersion(self):  # noqa: N802
        if self.dead:
            raise _closed()
        return 9000000

    def getURI(self):  # noqa: N802
        return "qemu:///system"

    def lookupByUUIDString(self, uuid):  # noqa: N802
        if self.dead:
            raise _closed()
        for dom in self.doms:
            if dom.uuid == uuid:
                return dom
        raise _error(libvirt.VIR_ERR_NO_DOMAIN, "no domain")

    def close(self):
        self.closed = True


@pytest.fixture(autouse=True)
def no_wait(monkeypatch):
    monkeypatch.setattr(reconnect, "POLL", 0)


def _opener(*conns):
    """virt.open: fails while the daemon is down (a None), then each
    connection in turn."""
    queue, seen = list(conns), []

    def open_(uri):
        seen.append(uri)
        conn = queue.pop(0)
        if conn is None:
            raise _error(libvirt.VIR_ERR_SYSTEM_ERROR, "Failed to connect "
                         "socket: No such file or directory")
        return conn
    open_.seen = seen
    return open_


def test_a_live_connection_is_kept():
    conn = Conn()
    assert reconnect.reattach(conn, "u", [A_UUID]) == (conn, None, False)


def test_a_dead_one_is_reopened_when_the_daemon_answers_again(monkeypatch):
    new = Conn()
    a = Dom(new, "A", A_UUID, RUNNING, jobs=3)
    opener = _opener(None, None, new)
    conn, doms, reopened = reconnect.reattach(Conn(dead=True), "u",
                                              [A_UUID, B_UUID], opener)
    assert (conn, doms, reopened) == (new, [a, None], True)
    assert opener.seen == ["u"] * 3
    # libvirt's recovery (a job on A) ended before anything was read
    assert a.jobs == 0


def test_a_daemon_that_does_not_come_back_is_raised():
    with pytest.raises(libvirt.libvirtError, match="Failed to connect"):
        reconnect.reattach(Conn(dead=True), "u", [A_UUID],
                           _opener(None, None), wait=0)


def test_a_lookup_failing_otherwise_than_no_domain_is_raised():
    new = Conn()
    new.lookupByUUIDString = lambda uuid: (_ for _ in ()).throw(_closed())
    with pytest.raises(libvirt.libvirtError, match="socket is closed"):
        reconnect.reattach(Conn(dead=True), "u", [A_UUID], _opener(new))
    assert new.closed


def test_settle_gives_up_on_a_job_that_does_not_end(monkeypatch):
    a = Dom(Conn(), "A", A_UUID, RUNNING, jobs=10 ** 9)
    assert reconnect.settle([a, None], wait=0) is False


class Stub:
    """The relay and the restore thread, ended; the restore failed (its
    connection died with libvirtd)."""

    ok, error, stream_bytes = False, "End of file while reading data", 0

    def cancel(self):
        pass

    def join(self, timeout=None):
        pass

    def is_alive(self):
        return False

    def unblock_reader(self):
        return False


def _move(monkeypatch, new):
    """A _Move whose connection died; ``new``: what reopens it."""
    monkeypatch.setattr(move, "qmp", lambda dom, cmd, **kw: {
        "status": "failed"})
    monkeypatch.setattr(virt, "open", _opener(new))
    dead = Conn(dead=True)
    m = object.__new__(move._Move)
    m.conn, m.uri, m.uuids = dead, "qemu:///system", (A_UUID, B_UUID)
    m.source = Dom(dead, "A", A_UUID, RUNNING)
    m.target = Dom(dead, "B", B_UUID, PAUSED)
    m.names = {"source": "A", "target": "B"}
    m.relay, m.restore = Stub(), Stub()
    return m


def test_move_undone_after_a_restart_reads_the_new_connection(monkeypatch):
    new = Conn()
    a = Dom(new, "A", A_UUID, RUNNING)
    b = Dom(new, "B", B_UUID, SHUTOFF)  # killed by libvirt: starting up
    m = _move(monkeypatch, new)
    with pytest.raises(errors.LiveMoveFailed, match="A runs again"):
        m._undo("QMP query-migrate on A: End of file while reading data")
    assert "resume" not in a.calls and "destroy" not in b.calls
    assert m.reopened is new and m.source is a


def test_move_a_paused_b_starting_up_after_a_restart(monkeypatch):
    """Stream complete, libvirtd gone before it resumed B: B never ran,
    so it is destroyed and A resumed."""
    new = Conn()
    a, b = Dom(new, "A", A_UUID, PAUSED), Dom(new, "B", B_UUID, PAUSED)
    m = _move(monkeypatch, new)
    with pytest.raises(errors.LiveMoveFailed):
        m._undo("lost")
    assert (a.calls[-2:], "destroy" in b.calls) == (["resume", "state"],
                                                    True)


def test_move_b_running_after_a_restart_goes_forward(monkeypatch):
    """libvirt resumed B, then went away before it answered: B has run
    guest code, A is never resumed; the finish destroys A."""
    new = Conn()
    a, b = Dom(new, "A", A_UUID, PAUSED), Dom(new, "B", B_UUID, RUNNING)
    m = _move(monkeypatch, new)
    m._undo("End of file while reading data")  # returns: forward
    m._finish()
    assert "resume" not in a.calls and a.code == SHUTOFF
    assert b.code == RUNNING and "destroy" not in b.calls


def test_move_with_libvirtd_gone_for_good_touches_nothing(monkeypatch):
    m = _move(monkeypatch, None)
    monkeypatch.setattr(reconnect, "RECONNECT_WAIT", 0)
    with pytest.raises(errors.LiveMoveIncomplete,
                       match="libvirtd does not answer since it went away"):
        m._undo("lost")
    assert m.source.calls == m.target.calls == []


def test_move_a_gone_after_a_restart_keeps_its_dead_handle(monkeypatch):
    new = Conn()
    Dom(new, "B", B_UUID, SHUTOFF)
    m = _move(monkeypatch, new)
    with pytest.raises(errors.LiveMoveIncomplete,
                       match="A is gone and B is shut off"):
        m._undo("lost")


def _hop_run(monkeypatch, source_new, dest_new):
    """A _Hop whose two connections died; each reopens to ``*_new``."""
    monkeypatch.setattr(virt, "open", _opener(source_new, dest_new))
    src, dst = Conn(dead=True), Conn(dead=True)
    run = hop._Hop(src, Dom(src, "A", A_UUID, RUNNING), dst)
    run.uris = {"source": "src", "dest": "dst"}
    return run


def test_hop_source_restarted_a_running_again_is_a_failed_hop(monkeypatch):
    src, dst = Conn(), Conn()
    a = Dom(src, "A", A_UUID, RUNNING, jobs=2)
    run = _hop_run(monkeypatch, src, dst)
    with pytest.raises(errors.HopFailed, match="A runs on the source"):
        run.after_failure(_error(1, "End of file while reading data"), "x")
    assert run.source is a and (run.source_conn, run.dest_conn) == (src,
                                                                    dst)


def test_hop_a_left_paused_after_a_restart_is_resumed(monkeypatch):
    src = Conn()
    a = Dom(src, "A", A_UUID, PAUSED)
    run = _hop_run(monkeypatch, src, Conn())
    with pytest.raises(errors.HopFailed):
        run.after_failure(_error(1, "End of file while reading data"), "x")
    assert "resume" in a.calls


def test_hop_finished_before_the_restart_is_finished(monkeypatch):
    dst = Conn()
    theirs = Dom(dst, "tmp-A", A_UUID, RUNNING)
    run = _hop_run(monkeypatch, Conn(), dst)
    assert run.after_failure(_error(1, "End of file"), "x") is theirs


def test_hop_with_a_libvirtd_gone_for_good_touches_nothing(monkeypatch):
    monkeypatch.setattr(reconnect, "RECONNECT_WAIT", 0)
    run = _hop_run(monkeypatch, None, None)
    with pytest.raises(errors.HopIncomplete,
                       match="the source's libvirtd does not answer"):
        run.after_failure(_error(1, "End of file"), "x")
