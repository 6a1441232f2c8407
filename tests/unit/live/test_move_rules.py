"""cs2os_agent.agent.live.move: who holds the guest after a failure.

The real move is tested against libvirtd (tests/functional/
test_live_move.py); these fake the two domains to reach the cases a real
run cannot be made to hit on demand: B loaded A's state and then was not
running, A could not be destroyed, the restore succeeded although the
move had failed.
"""

import libvirt
import pytest

from cs2os_agent.agent.live import errors
from cs2os_agent.agent.live import move


class Dom:
    def __init__(self, name, state, destroy_fails=False):
        self._name, self.code = name, state
        self.destroy_fails = destroy_fails
        self.calls = []

    def name(self):
        return self._name

    def state(self):
        return [self.code, 0]

    def destroy(self):
        self.calls.append("destroy")
        if self.destroy_fails:
            raise libvirt.libvirtError("Timed out during operation")
        self.code = libvirt.VIR_DOMAIN_SHUTOFF

    def resume(self):
        self.calls.append("resume")
        self.code = libvirt.VIR_DOMAIN_RUNNING


class Stub:
    """The relay and the restore thread, already ended."""

    def __init__(self, ok):
        self.ok = ok
        self.error = None if ok else "load failed"
        self.stream_bytes = 0

    def cancel(self):
        pass

    def join(self, timeout=None):
        pass

    def is_alive(self):
        return False

    def unblock_reader(self):
        return False


def _move(source, target, restore_ok, monkeypatch):
    monkeypatch.setattr(move, "qmp", lambda dom, cmd, **kw: {
        "status": "cancelled"})
    m = object.__new__(move._Move)
    m.source, m.target = source, target
    m.names = {"source": source.name(), "target": target.name()}
    m.relay, m.restore = Stub(True), Stub(restore_ok)
    return m


PAUSED, RUNNING, SHUTOFF = (libvirt.VIR_DOMAIN_PAUSED,
                            libvirt.VIR_DOMAIN_RUNNING,
                            libvirt.VIR_DOMAIN_SHUTOFF)


def test_b_failed_to_load_a_is_resumed_b_destroyed(monkeypatch):
    a, b = Dom("A", PAUSED), Dom("B", PAUSED)
    m = _move(a, b, False, monkeypatch)
    with pytest.raises(errors.LiveMoveFailed, match="A runs again"):
        m._undo("libvirt could not load A's state into B")
    assert (a.calls, b.calls) == (["resume"], ["destroy"])


def test_b_loaded_after_all_a_is_never_resumed(monkeypatch):
    a, b = Dom("A", PAUSED), Dom("B", RUNNING)
    m = _move(a, b, True, monkeypatch)
    m._undo("timed out waiting for A's migration")  # returns: forward
    m._finish()
    assert (a.calls, b.calls) == (["destroy"], [])


def test_b_loaded_but_not_running_leaves_a_paused(monkeypatch):
    a, b = Dom("A", PAUSED), Dom("B", PAUSED)
    m = _move(a, b, True, monkeypatch)
    with pytest.raises(errors.LiveMoveIncomplete,
                       match="B loaded A's state but is paused; A is left "
                       "paused and not resumed"):
        m._finish()
    assert (a.calls, b.calls) == ([], [])


def test_a_not_destroyable_after_b_runs_needs_an_operator(monkeypatch):
    a, b = Dom("A", PAUSED, destroy_fails=True), Dom("B", RUNNING)
    m = _move(a, b, True, monkeypatch)
    with pytest.raises(errors.LiveMoveIncomplete,
                       match="B runs the guest, but A .paused. could not be "
                       "destroyed: Timed out during operation; destroy A"):
        m._finish()
    assert "resume" not in a.calls


def test_a_that_does_not_run_after_the_undo_is_reported(monkeypatch):
    a, b = Dom("A", SHUTOFF), Dom("B", SHUTOFF)
    m = _move(a, b, False, monkeypatch)
    with pytest.raises(errors.LiveMoveIncomplete,
                       match="after the undo A is shut off and B is shut off"):
        m._undo("cut")
