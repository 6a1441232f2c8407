"""A Neutron stand-in and a CloudStack VM's NICs: plain names, imported by
the NIC plan's tests (test_nics.py), the ports step's (test_prepare.py) and
the security groups' (test_secgroups.py).
"""

import ipaddress
import itertools
import types

from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import secgroups

MID = "m-1"
PROJECT = "p-target"


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
        self.groups = {}  # id: SimpleNamespace(id, name, description, ...)
        self.rules = []  # dicts, as NetworkClient.security_group_rules
        self.calls = []  # security group writes: (operation, id)
        self._ids = itertools.count(1)

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
                    description=None, security_groups=None):
        ip = ip or "10.0.0.%d" % (100 + len(self.ports))
        port = types.SimpleNamespace(
            id="port-%d" % len(self.ports), name=name, network_id=network_id,
            mac_address=mac, fixed_ips=[{"ip_address": ip}],
            security_group_ids=list(security_groups or ["default"]))
        self.ports.append(port)
        return port

    def delete_port(self, port_id):
        self.deleted.append(port_id)
        self.ports = [p for p in self.ports if p.id != port_id]


    # -- security groups, as Neutron keeps them ---------------------------

    def find_security_groups(self, name):
        return [g for g in self.groups.values()
                if g.name == name and g.project_id == PROJECT]

    def create_security_group(self, name, description, project_id=PROJECT):
        if name.lower() == "default":
            raise exception.OpenStackError(
                operation="create security group %s" % name,
                reason="409: Default security group already exists.")
        group = types.SimpleNamespace(id="sg-%d" % next(self._ids),
                                      name=name, description=description,
                                      project_id=project_id)
        self.groups[group.id] = group
        self.calls.append(("create group", group.id))
        for rule in secgroups.ALLOW_ALL_EGRESS:
            self._add_rule(group.id, dict(rule))
        return group

    def security_group_rules(self, group_id=None, remote_group_id=None):
        return [dict(r) for r in self.rules
                if group_id in (None, r["security_group_id"])
                and remote_group_id in (None, r["remote_group_id"])]

    def create_security_group_rule(self, group_id, direction,
                                   ethertype="IPv4", protocol=None,
                                   port_range_min=None, port_range_max=None,
                                   remote_ip_prefix=None,
                                   remote_group_id=None):
        if protocol in ("tcp", "udp") and 0 in (port_range_min,
                                                 port_range_max):
            raise exception.OpenStackError(operation="create rule",
                                           reason="Invalid port 0")
        rule = self._add_rule(group_id, {
            "direction": direction, "ethertype": ethertype,
            "protocol": protocol, "port_range_min": port_range_min,
            "port_range_max": port_range_max,
            "remote_ip_prefix": remote_ip_prefix,
            "remote_group_id": remote_group_id})
        self.calls.append(("create rule", rule["id"]))
        return rule

    def _add_rule(self, group_id, values):
        rule = dict(values, id="sgr-%d" % next(self._ids),
                    security_group_id=group_id, remote_address_group_id=None)
        key = secgroups.rule_key(rule)
        if any(secgroups.rule_key(r) == key for r in self.rules
               if r["security_group_id"] == group_id):
            raise exception.OpenStackError(operation="create rule",
                                           reason="409: rule exists")
        self.rules.append(rule)
        return rule

    def delete_security_group_rule(self, rule_id):
        self.calls.append(("delete rule", rule_id))
        self.rules = [r for r in self.rules if r["id"] != rule_id]

    def ports_with_security_group(self, group_id):
        return [p for p in self.ports if group_id in p.security_group_ids]

    def delete_security_group(self, group_id):
        if self.ports_with_security_group(group_id):
            return False  # Neutron: 409 SecurityGroupInUse
        self.calls.append(("delete group", group_id))
        self.groups.pop(group_id, None)
        # The rules of the group and those allowing it (ON DELETE CASCADE).
        self.rules = [r for r in self.rules if group_id not in (
            r["security_group_id"], r["remote_group_id"])]
        return True

    def rules_of(self, group_id):
        """The group's rules as keys, remote groups by name."""
        def name(remote):
            return self.groups[remote].name
        return {secgroups.rule_key(r, name) for r in self.rules
                if r["security_group_id"] == group_id}


def nic(network, mac, ip, device, default=False):
    return {"networkid": "cs-" + network, "networkname": network,
            "macaddress": mac, "ipaddress": ip, "deviceid": str(device),
            "isdefault": default}


NICS = [nic("backend", "1e:00:00:00:00:02", "192.168.5.7", 1),
        nic("guest", "1e:00:00:00:00:01", "10.0.0.50", 0, default=True)]
