"""The ports step and its undo, against a Neutron stand-in; what validate
says of a root volume's internal snapshots.

The real thing (a real Neutron with Open vSwitch, ports booted into a Nova
server) is in tests/e2e/test_network_identity.py.
"""

import pytest

from cs2os_agent import qcow2
from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import nics
from cs2os_agent.conductor.flow import prepare
from tests.unit.conductor.flow.fake_neutron import MID
from tests.unit.conductor.flow.fake_neutron import NICS
from tests.unit.conductor.flow.fake_neutron import FakeNeutron


class Ctx:
    def __init__(self, neutron, plan):
        self.id = MID
        self.network = neutron  # the target project's Neutron
        self.resources = {"nic_plan": plan}
        # A VM without security groups: the ports get the project's
        # default group (test_secgroups.py has the groups).
        self.migration = {"result": {}, "source": {}}
        self.committed = False

    def guard(self):
        pass  # fencing: test_context.py

    def resource(self, **values):
        self.resources.update(values)

    def result(self, **values):
        self.migration["result"].update(values)


def test_ports_step_creates_reuses_and_undo_deletes_only_ours():
    neutron = FakeNeutron()
    foreign = neutron.create_port("foreign", "net-b", "fa:16:3e:00:00:01")
    plan, _ = nics.plan(MID, NICS, {"guest": "private",
                                    "backend": "private"}, False, neutron)
    # An earlier attempt made nic0 and died before recording it.
    leftover = neutron.create_port("cs2os-m-1-nic0", "net-a",
                                   "1e:00:00:00:00:01", ip="10.0.0.50")
    ctx = Ctx(neutron, plan)
    prepare.ports(ctx)
    ids = [p["id"] for p in ctx.resources["ports"]]
    assert ids[0] == leftover.id
    assert len(ids) == 2 and foreign.id not in ids
    nics_result = ctx.migration["result"]["nics"]
    assert [(n["mac"], n["ip"], n["ip_preserved"]) for n in nics_result] == [
        ("1e:00:00:00:00:01", "10.0.0.50", True),
        # 192.168.5.7 is not in private's 10.0.0.0/24: Neutron chose.
        ("1e:00:00:00:00:02", "10.0.0.102", False),
    ]
    # Running the step again creates nothing new.
    prepare.ports(ctx)
    assert [p["id"] for p in ctx.resources["ports"]] == ids
    assert len(neutron.ports) == 3

    message = prepare.undo_ports(ctx)
    assert sorted(neutron.deleted) == sorted(ids)
    assert [p.id for p in neutron.ports] == [foreign.id]
    assert message == "deleted ports %s" % ", ".join(sorted(ids))


def test_undo_ports_waits_for_the_server_to_be_gone():
    neutron = FakeNeutron()
    plan, _ = nics.plan(MID, NICS[1:], {"guest": "private"}, False, neutron)
    ctx = Ctx(neutron, plan)
    prepare.ports(ctx)
    ctx.resource(server_id="still-there")
    assert prepare.undo_ports(ctx) is None
    assert neutron.deleted == []


class _SnapshotCtx:
    def __init__(self, mode, options):
        self.migration = {"mode": mode, "options": options}
        self.events = []

    def event(self, step, message, kind="info"):
        self.events.append((step, message))


def test_validate_says_what_becomes_of_internal_snapshots():
    header = qcow2.Header(64 << 20, True, snapshots=3)
    vm = {"name": "web-1"}
    assert prepare.snapshots_outcome(_SnapshotCtx("cold", {}), vm,
                                     qcow2.Header(64 << 20, True),
                                     []) is None
    cold = _SnapshotCtx("cold", {})
    assert prepare.snapshots_outcome(cold, vm, header, []) == {
        "count": 3, "kept": False,
        "note": "Nova cannot use internal snapshots: the current state is "
                "migrated and the snapshots left behind in CloudStack"}
    assert cold.events == [("validate", "the root volume holds 3 internal "
                            "snapshots; Nova cannot use internal snapshots:"
                            " the current state is migrated and the "
                            "snapshots left behind in CloudStack")]
    warm = prepare.snapshots_outcome(_SnapshotCtx("warm", {}), vm, header, [])
    assert warm["kept"] is False and "mirrors the current state" in warm[
        "note"]
    keep = {"keep_snapshots": True}
    kept = prepare.snapshots_outcome(_SnapshotCtx("cold", keep), vm, header,
                                     [])
    assert kept["kept"] is True
    with pytest.raises(exception.Invalid) as err:
        prepare.snapshots_outcome(_SnapshotCtx("cold", keep), vm, header,
                                  [{"path": "/mnt/p/layer"}])
    assert "its 3 internal snapshots cannot be kept" in str(err.value)
