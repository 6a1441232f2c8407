"""NIC planning (nics.plan) against a Neutron stand-in.

The ports step that carries the plan out: test_prepare.py.  The real thing
(a real Neutron with Open vSwitch, ports booted into a Nova server) is in
tests/e2e/test_network_identity.py.
"""

import pytest

from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import nics
from tests.unit.conductor.flow.fake_neutron import MID
from tests.unit.conductor.flow.fake_neutron import NICS
from tests.unit.conductor.flow.fake_neutron import FakeNeutron


def test_plan_orders_default_first_and_keeps_ips_that_fit():
    neutron = FakeNeutron()
    plan, dropped = nics.plan(MID, NICS, {"guest": "private",
                                          "cs-backend": "net-b"},
                              False, neutron)
    assert dropped == []
    assert [(p["index"], p["cloudstack_network"], p["neutron_network_id"],
             p["mac"], p["ip"], p["subnet_id"], p["port_name"])
            for p in plan] == [
        (0, "guest", "net-a", "1e:00:00:00:00:01", "10.0.0.50", "sub-a",
         "cs2os-m-1-nic0"),
        (1, "backend", "net-b", "1e:00:00:00:00:02", "192.168.5.7",
         "sub-b", "cs2os-m-1-nic1"),
    ]


def test_an_ip_outside_the_subnets_is_left_to_neutron():
    neutron = FakeNeutron()
    plan, _ = nics.plan(MID, NICS[1:], {"guest": "dmz"}, False, neutron)
    assert (plan[0]["ip"], plan[0]["cloudstack_ip"]) == (None, "10.0.0.50")


def test_unmapped_nics_are_named_or_dropped_on_request():
    neutron = FakeNeutron()
    with pytest.raises(exception.Invalid) as info:
        nics.plan(MID, NICS, {"guest": "private"}, False, neutron)
    assert "no Neutron network mapped for NIC 1 (1e:00:00:00:00:02 on " \
        "CloudStack network backend)" in str(info.value)
    plan, dropped = nics.plan(MID, NICS, {"guest": "private"}, True,
                              neutron)
    assert [p["cloudstack_network"] for p in plan] == ["guest"]
    assert dropped == ["NIC 1 (1e:00:00:00:00:02 on CloudStack network "
                       "backend)"]


def test_a_foreign_port_with_the_mac_or_ip_is_refused_with_its_id():
    neutron = FakeNeutron()
    neutron.create_port("someone-else", "net-x", "1e:00:00:00:00:01")
    neutron.create_port("other", "net-a", "fa:16:3e:00:00:09",
                        ip="10.0.0.50")
    with pytest.raises(exception.Invalid) as info:
        nics.plan(MID, NICS[1:], {"guest": "private"}, False, neutron)
    text = str(info.value)
    assert "MAC 1e:00:00:00:00:01 of NIC 0" in text
    assert "already used by Neutron port port-0 on network net-x" in text
    assert "IP 10.0.0.50 of NIC 0" in text
    assert "already used by Neutron port port-1 on network private" in text


def test_this_migrations_own_leftover_port_is_not_a_conflict():
    neutron = FakeNeutron()
    neutron.create_port("cs2os-m-1-nic0", "net-a", "1e:00:00:00:00:01",
                        ip="10.0.0.50")
    plan, _ = nics.plan(MID, NICS[1:], {"guest": "private"}, False, neutron)
    assert plan[0]["ip"] == "10.0.0.50"


def test_an_unknown_neutron_network_is_named():
    with pytest.raises(exception.Invalid) as info:
        nics.plan(MID, NICS[1:], {"guest": "nowhere"}, False,
                  FakeNeutron())
    assert "Neutron has no network with id or name nowhere" in \
        str(info.value)
