"""cs2os_agent.agent.live_rpc (RPC API 1.6) with libvirt, the hop and the
move faked: idempotency, the record, the begin/finish/abort handshake and
its deadline, and how the live errors cross RPC.

The real thing over RabbitMQ and two libvirtds: tests/functional/
test_live_rpc.py.
"""

import contextlib
import json
import os
import stat
import threading
import types

import libvirt
import pytest

from cs2os_agent.agent import layout
from cs2os_agent.agent import live_rpc
from cs2os_agent.agent.live import errors
from cs2os_agent.agent.live import handshake
from cs2os_agent.agent.live import hop
from cs2os_agent.agent.live import livehost
from cs2os_agent.agent.live import move
from cs2os_agent.agent.live import state
from cs2os_agent.common import exception

INST = "22222222-2222-2222-2222-222222222222"
A_UUID = "11111111-1111-1111-1111-111111111111"
MIG = "0123abcd-mig"
SOURCE = {"host": "10.0.0.7", "domain": "i-2-7-VM"}
NAMES = {"source": "cs2os-live-0123abcd", "target": "instance-1"}


class Agent(live_rpc.LiveEndpoints):
    """The mixin with the manager's helpers reduced to what it uses."""

    def __init__(self, tmp_path):
        self.conf = types.SimpleNamespace(
            live=types.SimpleNamespace(
                run_dir=str(tmp_path / "live"), move_wait_seconds=60,
                hop_timeout=5, migrate_address="192.0.2.1",
                kvm_libvirt_uri="qemu+ssh://{host}/system"),
            libvirt=types.SimpleNamespace(connection_uri="qemu:///system"))
        self.files = layout.InstanceFiles(str(tmp_path / INST))
        os.makedirs(self.files.instance_dir, exist_ok=True)
        self._mirrors, self._live_moves = {}, {}

    @contextlib.contextmanager
    def _exclusive(self, instance_uuid, migration_id):
        yield

    def _locate(self, instance_uuid):
        return types.SimpleNamespace(state="shutoff"), self.files

    def _require_shutoff(self, info, instance_uuid):
        pass


class Dom:
    def __init__(self, name, uuid=A_UUID):
        self._name, self.uuid = name, uuid

    def name(self):
        return self._name

    def UUIDString(self):  # noqa: N802 - libvirt's name
        return self.uuid


class Local:
    """livehost.Local: ``temp`` runs here unless None; ``b_runs``."""

    temp = Dom(NAMES["source"])
    b_runs = False
    stray = None  # a domain by the temporary name, no record of it

    def __init__(self, conf):
        self.conn = types.SimpleNamespace(
            lookupByUUIDString=lambda uuid: Dom(NAMES["target"], uuid),
            lookupByName=self._by_name)

    def _by_name(self, name):
        if self.stray is None or self.stray.name() != name:
            raise libvirt.libvirtError("no domain %s" % name)
        return self.stray

    def open(self):
        return self

    __enter__ = open

    def close(self):
        pass

    def __exit__(self, *exc):
        pass

    def temp_domain(self, hop_rec):
        return self.temp

    def moved(self, instance_uuid, hop_rec):
        return self.b_runs and self.temp is None

    hopped_earlier = livehost.Local.hopped_earlier
    refuse_if_moved = livehost.Local.refuse_if_moved
    refuse_unrecorded = livehost.Local.refuse_unrecorded


class Kvm(Local):
    def __init__(self, conf, host):
        super().__init__(conf)
        self.host = host

    def domain(self, name):
        return Dom(name)


@pytest.fixture
def agent(tmp_path, monkeypatch):
    monkeypatch.setattr(livehost, "Local", Local)
    monkeypatch.setattr(livehost, "Kvm", Kvm)
    monkeypatch.setattr(livehost, "root_dev", lambda dom: "vda")
    monkeypatch.setattr(livehost, "nova_root_size", lambda *a: 1 << 30)
    monkeypatch.setattr(livehost, "console_files", lambda dom, files: {
        "/var/log/a.log": os.path.join(files.instance_dir, "c.log")})
    monkeypatch.setattr(Local, "temp", Dom(NAMES["source"]))
    return Agent(tmp_path)


def _swapped(agent):
    """prepare_live_target + swap_disk, as their files show it."""
    with open(agent.files.staged_meta, "w") as f:
        json.dump({"migration_id": MIG, "staged": agent.files.staged,
                   "source": {"transport": "live"}}, f)
    open(agent.files.orig, "w").close()


def _hop_result(dom=None, **kwargs):
    values = dict(domain=dom or Dom(NAMES["source"]), source_name="i-2-7-VM",
                  source_disks={"vda": "/mnt/p/a.qcow2"},
                  source_formats={"vda": "qcow2"},
                  source_files={"/i/c.log": "/var/log/a.log"},
                  downtime_ms=40, elapsed_ms=900, memory_bytes=1 << 26,
                  seconds=1.23456)
    values.update(kwargs)
    return hop.HopResult(**values)


# -- live_hop / live_hop_back ---------------------------------------------


def test_hop_refused_until_t_is_swapped_in(agent):
    with pytest.raises(exception.LiveRefused,
                       match="call prepare_live_target and swap_disk"):
        agent.live_hop(None, MIG, INST, SOURCE)


def test_hop_is_incremental_onto_novas_disk_and_recorded(agent,
                                                         monkeypatch):
    _swapped(agent)
    calls = []

    def fake_hop(source_conn, a, dest_conn, disks, temp, **kwargs):
        calls.append((a.name(), disks, temp, kwargs))
        return _hop_result()

    monkeypatch.setattr(hop, "hop", fake_hop)
    done = agent.live_hop(None, MIG, INST, SOURCE)
    (a_name, disks, temp, kwargs), = calls
    assert (a_name, disks, temp) == ("i-2-7-VM", {"vda": agent.files.disk},
                                     "cs2os-live-0123abcd")
    assert kwargs["incremental"] is True and kwargs["formats"] == {
        "vda": "qcow2"}
    assert kwargs["migrate_address"] == "192.0.2.1"
    assert kwargs["timeout"] == 5
    assert done["temp_domain"] == "cs2os-live-0123abcd"
    assert (done["downtime_ms"], done["seconds"], done["reused"]) == (
        40, 1.235, False)
    record = state.load(agent.conf.live.run_dir, MIG)
    assert record["instance_uuid"] == INST
    assert record["hop"]["source_disks"] == {"vda": "/mnt/p/a.qcow2"}
    assert record["hop"]["source"] == SOURCE
    # Called again (the conductor restarted): the temp domain runs here,
    # the first result comes back; a fresh agent reads the same record.
    again = Agent.__new__(Agent)
    again.__dict__.update(agent.__dict__, _live_moves={})
    assert again.live_hop(None, MIG, INST, SOURCE) == dict(done, reused=True)
    assert len(calls) == 1


@pytest.mark.parametrize("raised,expected,text", [
    (errors.HopRefused(source="A", dest="d", reason="CPU"),
     exception.LiveRefused, "still runs on the source"),
    (errors.HopFailed(source="A", dest="d", reason="broke"),
     exception.LiveFailed, "runs on the source again"),
    (errors.HopIncomplete(source="A", dest="d", reason="A is gone"),
     exception.LiveIncomplete, "needs an operator"),
])
def test_hop_errors_cross_rpc_as_live_errors(agent, monkeypatch, raised,
                                            expected, text):
    _swapped(agent)

    def fake_hop(*args, **kwargs):
        raise raised

    monkeypatch.setattr(hop, "hop", fake_hop)
    with pytest.raises(expected, match=text):
        agent.live_hop(None, MIG, INST, SOURCE)
    assert state.load(agent.conf.live.run_dir, MIG) == {}


def test_a_hop_whose_record_was_lost_needs_an_operator(agent, monkeypatch):
    _swapped(agent)
    monkeypatch.setattr(Local, "stray", Dom("cs2os-live-0123abcd"))
    monkeypatch.setattr(hop, "hop", None)  # never called
    with pytest.raises(exception.LiveIncomplete,
                       match="cs2os-live-0123abcd .UUID 1111.* runs here "
                       "but this agent has no record of its hop"):
        agent.live_hop(None, MIG, INST, SOURCE)


@pytest.mark.parametrize("source", [
    None, {"host": "h"}, {"host": "a b", "domain": "x"},
    {"host": "h/../x", "domain": "x"}, {"host": "h", "domain": ""}])
def test_a_bad_source_is_refused(agent, source):
    with pytest.raises(exception.InvalidSource):
        agent.live_hop(None, MIG, INST, source)


def test_hop_back_nothing_hopped(agent):
    assert agent.live_hop_back(None, MIG, INST, SOURCE) == {
        "migration_id": MIG, "hopped_back": False}


def test_hop_back_from_the_record_then_again(agent, monkeypatch):
    record = livehost.hop_record(_hop_result(), SOURCE)
    state.update(agent.conf.live.run_dir, MIG, instance_uuid=INST,
                 hop=record)
    calls = []

    def fake_back(result, source_conn, **kwargs):
        calls.append((result, kwargs))
        return _hop_result(dom=Dom("i-2-7-VM"), downtime_ms=30, seconds=2)

    monkeypatch.setattr(hop, "hop_back", fake_back)
    done = agent.live_hop_back(None, MIG, INST, SOURCE)
    (result, kwargs), = calls
    assert result.domain is Local.temp
    assert result.source_disks == {"vda": "/mnt/p/a.qcow2"}
    assert result.source_files == {"/i/c.log": "/var/log/a.log"}
    assert kwargs == {"migrate_address": "10.0.0.7", "timeout": 5}
    assert done["hopped_back"] is True and done["domain"] == "i-2-7-VM"
    record = state.load(agent.conf.live.run_dir, MIG)
    assert "hop" not in record and record["hop_back"]["hopped_back"]
    assert agent.live_hop_back(None, MIG, INST, SOURCE)["reused"] is True
    assert len(calls) == 1


def test_hop_back_refused_once_the_guest_is_in_b(agent, monkeypatch):
    state.update(agent.conf.live.run_dir, MIG, instance_uuid=INST,
                 hop=livehost.hop_record(_hop_result(), SOURCE))
    monkeypatch.setattr(Local, "temp", None)
    monkeypatch.setattr(Local, "b_runs", True)
    with pytest.raises(exception.LiveRefused, match="runs in Nova's"):
        agent.live_hop_back(None, MIG, INST, SOURCE)


# -- begin / finish / abort ------------------------------------------------


class FakeMove:
    """move.move: B waits (before_stream), then loads or is undone."""

    def __init__(self, fail_before=None, fail_after=None):
        self.fail_before, self.fail_after = fail_before, fail_after
        self.kwargs = None

    def __call__(self, conn, source, target, run_root, timeout=120,
                 before_stream=None):
        self.kwargs = {"source": source.name(), "target": target.name(),
                       "run_root": run_root, "timeout": timeout}
        if self.fail_before:
            raise self.fail_before
        try:
            before_stream()
        except move._Failed as exc:  # as move.run's undo reports it
            raise errors.LiveMoveFailed(reason=str(exc), **NAMES) from None
        if self.fail_after:
            raise self.fail_after
        return move.MoveResult(downtime_ms=25, migration_ms=300,
                               switch_seconds=0.41234, stream_bytes=4096,
                               preflight=None)


@pytest.fixture
def hopped(agent, monkeypatch):
    state.update(agent.conf.live.run_dir, MIG, instance_uuid=INST,
                 hop=livehost.hop_record(_hop_result(), SOURCE))
    fake = FakeMove()
    monkeypatch.setattr(move, "move", fake)
    agent.fake = fake
    return agent


def test_begin_waits_then_finish_runs_b_and_records_it(hopped):
    begun = hopped.begin_live_move(None, MIG, INST, 30)
    assert begun["target_waiting"] is True and begun["reused"] is False
    assert hopped.fake.kwargs == {
        "source": NAMES["source"], "target": NAMES["target"],
        "run_root": hopped.conf.live.run_dir,
        "timeout": 30 + live_rpc.MOVE_SECONDS}
    assert hopped.begin_live_move(None, MIG, INST, 30)["reused"] is True
    done = hopped.finish_live_move(None, MIG)
    assert done == {"state": "running", "downtime_ms": 25,
                    "migration_ms": 300, "switch_seconds": 0.412,
                    "stream_bytes": 4096, "migration_id": MIG,
                    "reused": False}
    assert hopped._live_moves == {}
    again = hopped.finish_live_move(None, MIG)  # an agent restart alike
    assert again == dict(done, reused=True)
    assert hopped.begin_live_move(None, MIG, INST, 30)["finished"] is True
    assert hopped.abort_live_move(None, MIG)["aborted"] is False


def test_abort_undoes_and_a_finish_after_it_says_so(hopped):
    hopped.begin_live_move(None, MIG, INST, 30)
    assert hopped.abort_live_move(None, MIG) == {
        "migration_id": MIG, "aborted": True, "reused": False}
    record = state.load(hopped.conf.live.run_dir, MIG)["move"]
    assert record["outcome"] == "aborted"
    assert hopped.abort_live_move(None, MIG)["aborted"] is True
    with pytest.raises(exception.LiveFailed,
                       match="the conductor aborted the move"):
        hopped.finish_live_move(None, MIG)


def test_the_deadline_undoes_the_move(hopped):
    hopped.begin_live_move(None, MIG, INST, 0.05)
    hopped._live_moves[MIG].join(5)
    with pytest.raises(exception.LiveFailed,
                       match="neither finish nor abort came within 0.05 s"):
        hopped.finish_live_move(None, MIG)
    assert state.load(hopped.conf.live.run_dir,
                      MIG)["move"]["outcome"] == "expired"


def test_the_wait_is_capped_by_the_option(hopped):
    hopped.conf.live.move_wait_seconds = 2
    hopped.begin_live_move(None, MIG, INST, 3600)
    assert hopped._live_moves[MIG].wait_seconds == 2
    hopped.abort_live_move(None, MIG)
    for bad in (0, -1, True, "5"):
        with pytest.raises(exception.Invalid, match="wait_seconds"):
            hopped.begin_live_move(None, MIG, INST, bad)


def test_a_move_refused_before_b_waits_is_raised_by_begin(hopped):
    hopped.fake.fail_before = errors.LiveMoveRefused(reason="CPU differs")
    with pytest.raises(exception.LiveRefused, match="CPU differs"):
        hopped.begin_live_move(None, MIG, INST, 30)
    assert hopped._live_moves == {}


def test_a_move_that_cannot_be_undone_needs_an_operator(hopped):
    hopped.fake.fail_after = errors.LiveMoveIncomplete(
        reason="B loaded A's state but is paused", **NAMES)
    hopped.begin_live_move(None, MIG, INST, 30)
    with pytest.raises(exception.LiveIncomplete,
                       match="needs an operator.*B loaded A's state"):
        hopped.finish_live_move(None, MIG)
    with pytest.raises(exception.LiveIncomplete, match="B loaded"):
        hopped.finish_live_move(None, MIG)  # from the record


def test_begin_needs_the_hop_and_its_domain(agent, hopped, monkeypatch):
    with pytest.raises(exception.LiveRefused, match="call live_hop first"):
        agent.begin_live_move(None, "other", INST, 30)
    monkeypatch.setattr(Local, "temp", None)
    with pytest.raises(exception.LiveRefused, match="does not run here"):
        agent.begin_live_move(None, MIG, INST, 30)


def test_finish_after_a_restart_finds_b_running(hopped, monkeypatch):
    with pytest.raises(exception.LiveRefused, match="no live move"):
        hopped.finish_live_move(None, MIG)
    monkeypatch.setattr(Local, "temp", None)
    monkeypatch.setattr(Local, "b_runs", True)
    assert hopped.finish_live_move(None, MIG) == {
        "state": "running", "recovered": True, "migration_id": MIG}
    assert hopped.finish_live_move(None, MIG)["reused"] is True


# -- the pieces ---------------------------------------------------------------


def test_the_gate_takes_the_first_decision_only():
    seen = []

    def run_move(gate):
        gate()
        seen.append("passed")
        return "result"

    run = handshake.MoveRun("m", run_move, 30)
    run.start()
    assert run.wait_started() is True
    assert run.release(handshake.FINISH) is True
    assert run.release(handshake.ABORT) is False
    run.join(5)
    assert (run.result, run.error, seen) == ("result", None, ["passed"])


def test_a_move_ending_before_the_gate_is_not_waiting():
    ended = threading.Event()

    def run_move(gate):
        raise errors.LiveMoveRefused(reason="no")

    run = handshake.MoveRun("m", run_move, 30, on_done=lambda r: ended.set())
    run.start()
    assert run.wait_started() is False
    assert ended.wait(5) and isinstance(run.error, errors.LiveMoveRefused)


def test_state_file_is_private_and_per_migration(tmp_path):
    run_dir = str(tmp_path / "live")
    state.update(run_dir, "m1", hop={"a": 1}, move={"b": 2})
    state.update(run_dir, "m1", move=None)
    assert state.load(run_dir, "m1") == {"migration_id": "m1",
                                         "hop": {"a": 1}}
    assert state.load(run_dir, "m2") == {}
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o711
    mode = os.stat(state.path(run_dir, "m1")).st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert os.path.dirname(state.path(run_dir, "../../x")) == run_dir


def test_for_rpc_leaves_other_errors_alone():
    other = ValueError("x")
    assert errors.for_rpc(other) is other
    assert isinstance(errors.for_rpc(errors.LiveMoveFailed(
        reason="r", **NAMES)), exception.LiveFailed)


def test_temp_name():
    assert livehost.temp_name("0123abcd-ffff") == "cs2os-live-0123abcd"
    assert livehost.temp_name("a/b c") == "cs2os-live-a-b-c"
