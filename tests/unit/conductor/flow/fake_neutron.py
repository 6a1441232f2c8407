"""A Neutron stand-in and a CloudStack VM's NICs: plain names, imported by
the NIC plan's tests (test_nics.py) and the ports step's (test_prepare.py).
"""

import ipaddress
import types

from cs2os_agent.common import exception

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
