"""NIC planning, the ports step and its undo, against a Neutron stand-in.

The real thing (a real Neutron with Open vSwitch, ports booted into a Nova
server) is in tests/e2e/test_network_identity.py.
"""

import ipaddress
import types

import pytest

from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import nics
from cs2os_agent.conductor.flow import prepare

MID = "m-1"


class FakeNeutron:
    def __init__(self):
        self.networks = {
            "net-a": types.SimpleNamespace(id="net-a", name="private"),
            "net-b": types.SimpleNamespace(id="net-b", name="dmz"),
        }
        self.subnets = {"net-a": [("sub-a", "10.0.0.0/24")],
                        "net-b": [("sub-b", "192.168.5.0/24")]}
        self.ports = []
        self.deleted = []

    def find_network(self, ref):
        for network in self.networks.values():
            if ref in (network.id, network.name):
                return network
        raise exception.Invalid(
            reason="Neutron has no network with id or name %s" % ref)

    def subnets_of(self, network_id):
        return [(sid, ipaddress.ip_network(cidr))
                for sid, cidr in self.subnets[network_id]]

    def ports_with_mac(self, mac):
        return [p for p in self.ports if p.mac_address == mac]

    def ports_with_ip(self, network_id, ip):
        return [p for p in self.ports if p.network_id == network_id
                and ip in [f["ip_address"] for f in p.fixed_ips]]

    def find_port(self, name, network_id=None, mac=None):
        return next((p for p in self.ports if p.name == name), None)

    def get_port(self, port_id):
        port = next((p for p in self.ports if p.id == port_id), None)
        if port is None:
            raise exception.OpenStackError(operation="show port",
                                           reason="404")
        return port

    def create_port(self, name, network_id, mac, subnet_id=None, ip=None,
                    description=None):
        ip = ip or "10.0.0.%d" % (100 + len(self.ports))
        port = types.SimpleNamespace(
            id="port-%d" % len(self.ports), name=name, network_id=network_id,
            mac_address=mac, fixed_ips=[{"ip_address": ip}])
        self.ports.append(port)
        return port

    def delete_port(self, port_id):
        self.deleted.append(port_id)
        self.ports = [p for p in self.ports if p.id != port_id]


def nic(network, mac, ip, device, default=False):
    return {"networkid": "cs-" + network, "networkname": network,
            "macaddress": mac, "ipaddress": ip, "deviceid": str(device),
            "isdefault": default}


NICS = [nic("backend", "1e:00:00:00:00:02", "192.168.5.7", 1),
        nic("guest", "1e:00:00:00:00:01", "10.0.0.50", 0, default=True)]


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


class Ctx:
    def __init__(self, neutron, plan):
        self.id = MID
        self.clients = types.SimpleNamespace(network=neutron)
        self.resources = {"nic_plan": plan}
        self.migration = {"result": {}}
        self.committed = False

    def guard(self):
        pass  # fencing is the runner's (tests/unit/test_conductor_flow.py)

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
