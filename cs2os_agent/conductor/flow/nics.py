"""Which Neutron network each CloudStack NIC goes to, checked up front.

The plan is made in validate, before anything exists: every NIC mapped (or
deliberately dropped), its MAC and IP free in Neutron (or held by this very
migration's port from an earlier attempt), and whether the IP fits one of
the target network's subnets.  The ports step then only carries it out.
"""

import ipaddress

from cs2os_agent.common import exception
from cs2os_agent.openstack import network as os_network


def _describe(nic):
    return "NIC %s (%s on CloudStack network %s)" % (
        nic.get("deviceid"), nic.get("macaddress"),
        nic.get("networkname") or nic.get("networkid"))


def _order(nics):
    # The default NIC first (it is the guest's eth0 in CloudStack's
    # templates too), then by device id.
    return sorted(nics, key=lambda n: (not n.get("isdefault"),
                                       int(n.get("deviceid") or 0)))


def mapping_for(nic, network_map):
    for key in (nic.get("networkid"), nic.get("networkname")):
        if key and key in network_map:
            return network_map[key]
    return None


def plan(migration_id, nics, network_map, drop_unmapped, neutron):
    """[{...planned NIC...}], [dropped NIC descriptions]; or Invalid."""
    ordered = _order(nics)
    unmapped = [n for n in ordered if mapping_for(n, network_map) is None]
    if unmapped and not drop_unmapped:
        raise exception.Invalid(
            reason="no Neutron network mapped for %s; map each CloudStack "
            "network (--network <cloudstack net>=<neutron net>, or "
            "[cloudstack] network_map) or say drop_unmapped_nics"
            % "; ".join(_describe(n) for n in unmapped))
    planned, problems = [], []
    for nic in ordered:
        target = mapping_for(nic, network_map)
        if target is None:
            continue
        network = neutron.find_network(target)
        entry = {
            "index": len(planned),
            "cloudstack_network_id": nic.get("networkid"),
            "cloudstack_network": nic.get("networkname"),
            "neutron_network_id": network.id,
            "neutron_network": network.name,
            "mac": nic.get("macaddress"),
            "cloudstack_ip": nic.get("ipaddress"),
            "ip": None,
            "subnet_id": None,
            "default": bool(nic.get("isdefault")),
        }
        entry["port_name"] = os_network.port_name(migration_id,
                                                   entry["index"])
        subnet_id = _subnet_holding(neutron, network.id,
                                    entry["cloudstack_ip"])
        if subnet_id is not None:
            entry["ip"], entry["subnet_id"] = entry["cloudstack_ip"], \
                subnet_id
        problems += _conflicts(neutron, nic, entry)
        planned.append(entry)
    if problems:
        raise exception.Invalid(reason="; ".join(problems))
    dropped = [_describe(n) for n in unmapped]
    return planned, dropped


def _subnet_holding(neutron, network_id, ip):
    if not ip:
        return None
    address = ipaddress.ip_address(ip)
    for subnet_id, cidr in neutron.subnets_of(network_id):
        if address.version == cidr.version and address in cidr:
            return subnet_id
    return None


def _conflicts(neutron, nic, entry):
    ours = entry["port_name"]
    problems = []
    if entry["mac"]:
        for port in neutron.ports_with_mac(entry["mac"]):
            if port.name != ours:
                problems.append(
                    "MAC %s of %s is already used by Neutron port %s on "
                    "network %s" % (entry["mac"], _describe(nic), port.id,
                                    port.network_id))
    if entry["ip"]:
        for port in neutron.ports_with_ip(entry["neutron_network_id"],
                                          entry["ip"]):
            if port.name != ours:
                problems.append(
                    "IP %s of %s is already used by Neutron port %s on "
                    "network %s" % (entry["ip"], _describe(nic), port.id,
                                    entry["neutron_network"]))
    return problems
