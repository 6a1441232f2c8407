"""A request for a Nova host aggregate: which of its hosts are usable
(fake Nova and agents), and the host admission picks with the slots (the
choice on a real SQLite file; on PostgreSQL with racing conductors:
tests/functional/test_aggregate_placement.py)."""

import types

import pytest

from cs2os_agent.common import exception
from cs2os_agent.conductor import preflight
from cs2os_agent.conductor.flow import admission
from cs2os_agent.conductor.flow import placement
from cs2os_agent.db import placement as placement_db

VM = {"host": {"id": "kvm-1"}, "root_volume": {"storage": {"id": "p1"}}}


def _service(host, status="enabled", state="up"):
    return types.SimpleNamespace(host=host, status=status, state=state)


class Compute:
    def __init__(self, aggregates, services):
        self._aggregates = aggregates
        self._services = services

    def aggregates(self):
        return list(self._aggregates)

    def services(self, binary):
        assert binary == "nova-compute"
        return list(self._services)


class Agents:
    def __init__(self, silent=()):
        self.silent = set(silent)

    def get_agent_info(self, context, host, timeout):
        if host in self.silent:
            raise TimeoutError(host)
        return {"host": host}


def _aggregate(id_, name, hosts, uuid=None):
    return types.SimpleNamespace(id=id_, name=name, hosts=hosts,
                                 uuid=uuid or "uuid-%s" % id_)


def survey_ctx(aggregates, services, silent=()):
    conn = types.SimpleNamespace(compute=Compute(aggregates, services))
    return types.SimpleNamespace(
        clients=types.SimpleNamespace(
            openstack=types.SimpleNamespace(conn=conn),
            agent=Agents(silent)),
        admin_context=None, events=[],
        event=lambda step, message, kind="info": None)


WAVE = _aggregate(7, "wave-3", ["c3", "c1", "c2"])


def test_the_usable_hosts_are_up_with_an_agent():
    ctx = survey_ctx([WAVE, _aggregate(8, "other", ["c9"])], [
        _service("c1"), _service("c2", state="down"), _service("c3")],
        silent=["c3"])
    found = placement.survey(ctx, "wave-3")
    assert found == placement.Placement(
        "wave-3", ["c1", "c2", "c3"], ["c1"], {
            "c2": "nova-compute is enabled and down",
            "c3": "no cs2os-agent answers (TimeoutError)"})
    # By id and uuid too.
    assert placement.survey(ctx, "7").name == "wave-3"
    assert placement.survey(ctx, "uuid-7").name == "wave-3"


def test_an_aggregate_nothing_can_go_to_is_invalid():
    ctx = survey_ctx([WAVE, _aggregate(9, "empty", []),
                      _aggregate(10, "twice", ["c1"]),
                      _aggregate(11, "twice", ["c2"])],
                     [_service("c1", status="disabled"), _service("c2")],
                     silent=["c2", "c3"])
    with pytest.raises(exception.Invalid, match="Nova has no host "
                       "aggregate nope"):
        placement.check(ctx, "nope")
    with pytest.raises(exception.Invalid, match="Nova host aggregate empty "
                       "has no hosts"):
        placement.check(ctx, "empty")
    with pytest.raises(exception.Invalid, match=r"2 Nova host aggregates "
                       r"are called twice: name it by id \(10, 11\)"):
        placement.check(ctx, "twice")
    with pytest.raises(exception.Invalid, match=(
            "no host of Nova host aggregate wave-3 can take a migration: "
            r"c1 \(nova-compute is disabled and up\), c2 \(no cs2os-agent "
            r"answers \(TimeoutError\)\), c3 \(no nova-compute service\)")):
        placement.check(ctx, "wave-3")


def _conf(**limits):
    options = dict(max_in_flight=0, max_per_compute_host=0,
                   max_per_kvm_host=0, max_per_pool=0)
    options.update(limits)
    return types.SimpleNamespace(conductor=types.SimpleNamespace(**options))


class Ctx:
    """What admission uses of a FlowContext, on a real database."""

    def __init__(self, db, mid, conf):
        self.db, self.id, self.conf = db, mid, conf
        self.migration = db.get_migration(mid)
        self.events, self.saved = [], []

    def guard(self):
        pass

    def save(self, **values):
        self.saved.append(values)

    def event(self, step, message, kind="info"):
        self.events.append(message)

    def check_cancelled(self, step):
        raise exception.MigrationCancelled(migration_id=self.id)


def _new(db, mid, target_host=None, state="running"):
    db.create_migration({
        "id": mid, "source_ref": mid, "state": state, "step": "validate",
        "options": {"aggregate": "wave-3"}, "source": {}, "resources": {},
        "result": {}, "target_host": target_host})


USABLE = placement.Placement("wave-3", ["c1", "c2", "c3"],
                             ["c1", "c2", "c3"], {})


def test_admission_picks_the_least_loaded_host_with_room(db):
    conf = _conf(max_per_compute_host=2)
    for n, host in enumerate(["c2", "c2", "c1"]):
        _new(db, "busy-%d" % n, host)
        assert db.acquire_slots("busy-%d" % n,
                                {"compute:%s" % host: 2}) is None
    # c3 has none in flight.
    _new(db, "m1")
    ctx = Ctx(db, "m1", conf)
    admission.admit(ctx, VM, placement=USABLE)
    assert db.get_migration("m1")["target_host"] == "c3"
    assert ctx.migration["target_host"] == "c3"
    assert ctx.events == ["placed on host c3 of host aggregate wave-3"]
    assert db.slot_holders("compute:c3") == ["m1"]
    # Then c1 (one in flight) and c3 tie: name order; c2 is full.
    _new(db, "m2")
    admission.admit(Ctx(db, "m2", conf), VM, placement=USABLE)
    assert db.get_migration("m2")["target_host"] == "c1"
    _new(db, "m3")
    admission.admit(Ctx(db, "m3", conf), VM, placement=USABLE)
    assert db.get_migration("m3")["target_host"] == "c3"
    assert sorted(db.slot_holders("compute:c3")) == ["m1", "m3"]


def test_a_held_compute_slot_keeps_its_host(db):
    conf = _conf(max_per_compute_host=1)
    _new(db, "m1", "c2")
    assert db.acquire_slots("m1", {"compute:c2": 1}) is None
    # Resumed: the held slot's host, even out of the usable ones now.
    ctx = Ctx(db, "m1", conf)
    admission.admit(ctx, VM, placement=placement.Placement(
        "wave-3", ["c1", "c2"], ["c1"], {"c2": "down"}))
    assert db.get_migration("m1")["target_host"] == "c2"
    assert db.slot_holders("compute:c2") == ["m1"]
    assert db.slot_holders("compute:c1") == []
    assert ctx.events == []


def test_without_a_per_host_limit_the_fewest_targeting_it_wins(db):
    _new(db, "a", "c1")
    _new(db, "b", "c1")
    _new(db, "c", "c2")
    _new(db, "gone", "c3", state="succeeded")
    _new(db, "d", "c3", state="failed")
    _new(db, "m1")
    admission.admit(Ctx(db, "m1", _conf()), VM, placement=USABLE)
    assert db.get_migration("m1")["target_host"] == "c3"
    assert db.slot_holders("compute:c3") == []


def test_every_host_full_waits_naming_the_aggregate(db):
    conf = _conf(max_per_compute_host=1, max_per_pool=5)
    for host in ("c1", "c2", "c3"):
        _new(db, "on-" + host, host)
        db.acquire_slots("on-" + host, {"compute:%s" % host: 1})
    _new(db, "m1")
    ctx = Ctx(db, "m1", conf)
    with pytest.raises(exception.MigrationCancelled):
        admission.admit(ctx, VM, placement=USABLE)
    assert ctx.saved == [{"waiting_for": "aggregate:wave-3"}]
    assert ctx.events == [
        "waiting for a slot: every usable host of host aggregate wave-3 "
        "is at its limit of 1 migrations in flight (c1: on-c1; c2: on-c2; "
        "c3: on-c3)"]
    # Nothing taken while it waits, and no host recorded.
    assert db.slot_holders("pool:p1") == []
    assert db.get_migration("m1")["target_host"] is None


def test_a_shared_limit_is_named_as_it_is(db):
    conf = _conf(max_per_compute_host=1, max_per_kvm_host=1)
    _new(db, "first")
    admission.admit(Ctx(db, "first", conf), VM, placement=USABLE)
    _new(db, "m1")
    ctx = Ctx(db, "m1", conf)
    with pytest.raises(exception.MigrationCancelled):
        admission.admit(ctx, VM, placement=USABLE)
    assert ctx.saved == [{"waiting_for": "kvm:kvm-1"}]
    assert ctx.events == ["waiting for a slot: kvm:kvm-1 is at its limit "
                          "of 1 migrations in flight (first)"]


def test_a_lost_claim_writes_nothing(db):
    _new(db, "m1")
    with pytest.raises(placement_db.Fenced):
        placement_db.acquire(db, "m1", ["c1"], lambda h: {
            "compute:%s" % h: 1}, expect={"lease_epoch": 99})
    assert db.slot_holders("compute:c1") == []
    assert db.get_migration("m1")["target_host"] is None


def test_order_is_fewest_then_name():
    assert placement_db.order(["c3", "c1", "c2", "c1"], {"c1": 2, "c3": 0}) \
        == ["c2", "c3", "c1"]


def test_the_preflight_names_what_admission_would_find():
    ctx = survey_ctx([WAVE], [_service("c1"), _service("c2"),
                              _service("c3", state="down")])
    ctx.conf = _conf(max_per_compute_host=1)
    ctx.migration = {"target_host": None, "options": {}}
    holders = {"compute:c1": ["m1"], "compute:c2": ["m2"]}
    db = types.SimpleNamespace(slot_holders=lambda r: holders.get(r, []))
    out = preflight.Report({"source": "vm", "mode": "cold"})
    preflight._aggregate(ctx, out, db, VM, "wave-3")
    assert out.body["plan"]["host"] == (
        "chosen at admission among the 2 usable hosts of host aggregate "
        "wave-3: c1, c2")
    assert out.body["findings"] == [
        {"check": "host", "severity": "warning", "message": "host "
         "aggregate wave-3: 1 of 3 hosts cannot take it: c3 (nova-compute "
         "is enabled and down)"},
        {"check": "limits", "severity": "warning", "message": "would wait "
         "for a slot: every usable host of host aggregate wave-3 is at its "
         "limit of 1 migrations in flight"}]
    # One host with room: no wait foreseen.
    holders.pop("compute:c2")
    out = preflight.Report({"source": "vm", "mode": "cold"})
    preflight._aggregate(ctx, out, db, VM, "wave-3")
    assert [f["check"] for f in out.body["findings"]] == ["host"]
