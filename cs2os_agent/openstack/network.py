"""Neutron through openstacksdk: the ports that carry a VM's identity,
and the security groups that guard them."""

import ipaddress

from openstack import exceptions as sdk_exc

from cs2os_agent.common import exception
from cs2os_agent.openstack import client as os_client

# Ports cs2os creates are named after the migration and the NIC's place,
# so a retry recognises its own leftovers and nothing else.
PORT_NAME = "cs2os-%(migration_id)s-nic%(index)d"


def port_name(migration_id, index):
    return PORT_NAME % {"migration_id": migration_id, "index": index}


class NetworkClient:
    def __init__(self, conn):
        self.conn = conn

    def _call(self, operation, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except sdk_exc.SDKException as exc:
            raise exception.OpenStackError(operation=operation,
                                           reason=exc) from None

    def find_network(self, ref):
        """The network with id or name ``ref``; Invalid when none or two."""
        return os_client.find_one(self.conn.network.find_network,
                                  "Neutron", "network", ref,
                                  "map to its id")

    def subnets_of(self, network_id):
        """[(subnet id, ip_network)] of a network."""
        return [(s.id, ipaddress.ip_network(s.cidr))
                for s in self._call("list subnets of %s" % network_id,
                                    self.conn.network.subnets,
                                    network_id=network_id)]

    def ports_with_mac(self, mac):
        return list(self._call("list ports with MAC %s" % mac,
                               self.conn.network.ports, mac_address=mac))

    def ports_with_ip(self, network_id, ip):
        return list(self._call(
            "list ports with IP %s" % ip, self.conn.network.ports,
            network_id=network_id, fixed_ips="ip_address=%s" % ip))

    def find_port(self, name, network_id=None, mac=None):
        """The port an earlier attempt of this migration made, or None.

        Only a port cs2os made itself is adopted: in the project of cs2os's
        own connection, with exactly this name and, when given, on this
        network with this MAC.  A name alone proves nothing: any project
        can name a port cs2os-<migration id>-nic0, and a port adopted here
        is attached to the new server and deleted on rollback.
        """
        project_id, _user_id = os_client.own_identity(self.conn)
        filters = {"name": name, "project_id": project_id}
        if network_id:
            filters["network_id"] = network_id
        if mac:
            filters["mac_address"] = mac
        ports = self._call("find port %s" % name,
                           lambda: list(self.conn.network.ports(**filters)))
        # The filters are Neutron's; check what came back all the same.
        for port in ports:
            if (port.name == name and port.project_id == project_id
                    and (not network_id or port.network_id == network_id)
                    and (not mac or (port.mac_address or "").lower()
                         == mac.lower())):
                return port
        return None

    def create_port(self, name, network_id, mac, subnet_id=None, ip=None,
                    description=None, security_groups=None):
        """``security_groups``: ids for the port; None or empty: Neutron
        gives it the project's default group."""
        kwargs = {"name": name, "network_id": network_id,
                  "mac_address": mac, "description": description or ""}
        if ip is not None:
            kwargs["fixed_ips"] = [{"subnet_id": subnet_id,
                                    "ip_address": ip}]
        if security_groups:
            kwargs["security_group_ids"] = list(security_groups)
        return self._call("create port %s" % name,
                          self.conn.network.create_port, **kwargs)

    def get_port(self, port_id):
        return self._call("show port %s" % port_id,
                          self.conn.network.get_port, port_id)

    def delete_port(self, port_id):
        self._call("delete port %s" % port_id,
                   self.conn.network.delete_port, port_id,
                   ignore_missing=True)

    # -- security groups -------------------------------------------------

    def find_security_groups(self, name):
        """The security groups named ``name`` in the project of cs2os's own
        connection (an admin's token lists every project's)."""
        project_id, _user_id = os_client.own_identity(self.conn)
        groups = self._call(
            "find security groups %s" % name,
            lambda: list(self.conn.network.security_groups(
                name=name, project_id=project_id)))
        return [g for g in groups
                if g.name == name and g.project_id == project_id]

    def create_security_group(self, name, description):
        """A new group; Neutron gives it its template's rules (allow all
        egress, IPv4 and IPv6, unless an admin changed the template)."""
        return self._call("create security group %s" % name,
                          self.conn.network.create_security_group,
                          name=name, description=description)

    def security_group_rules(self, group_id=None, remote_group_id=None):
        """The rules of group ``group_id``, or those that allow
        ``remote_group_id`` (in any group), as plain dicts."""
        query = {}
        if group_id:
            query["security_group_id"] = group_id
        if remote_group_id:
            query["remote_group_id"] = remote_group_id
        rules = self._call(
            "list security group rules %s" % (group_id or remote_group_id),
            lambda: list(self.conn.network.security_group_rules(**query)))
        return [rule_dict(r) for r in rules
                if (not group_id or r.security_group_id == group_id)
                and (not remote_group_id
                     or r.remote_group_id == remote_group_id)]

    def create_security_group_rule(self, group_id, direction,
                                   ethertype="IPv4", protocol=None,
                                   port_range_min=None, port_range_max=None,
                                   remote_ip_prefix=None,
                                   remote_group_id=None):
        """One rule (None: any); a dict as security_group_rules gives."""
        kwargs = {"security_group_id": group_id, "direction": direction,
                  "ether_type": ethertype}
        for key, value in (("protocol", protocol),
                           ("port_range_min", port_range_min),
                           ("port_range_max", port_range_max),
                           ("remote_ip_prefix", remote_ip_prefix),
                           ("remote_group_id", remote_group_id)):
            if value is not None:
                kwargs[key] = value
        return rule_dict(self._call(
            "create %s rule in security group %s" % (direction, group_id),
            self.conn.network.create_security_group_rule, **kwargs))

    def delete_security_group_rule(self, rule_id):
        self._call("delete security group rule %s" % rule_id,
                   self.conn.network.delete_security_group_rule, rule_id,
                   ignore_missing=True)

    def ports_with_security_group(self, group_id):
        """The ports (of any project an admin sees) the group is on."""
        ports = self._call(
            "list ports of security group %s" % group_id,
            lambda: list(self.conn.network.ports(security_groups=group_id)))
        return [p for p in ports if group_id in (p.security_group_ids or [])]

    def delete_security_group(self, group_id):
        """Delete the group: True once it is gone, False when Neutron
        refuses because a port still uses it (409)."""
        try:
            self.conn.network.delete_security_group(group_id,
                                                    ignore_missing=True)
        except sdk_exc.ConflictException:
            return False
        except sdk_exc.SDKException as exc:
            raise exception.OpenStackError(
                operation="delete security group %s" % group_id,
                reason=exc) from None
        return True


RULE_KEYS = ("id", "security_group_id", "direction", "ethertype", "protocol",
             "port_range_min", "port_range_max", "remote_ip_prefix",
             "remote_group_id", "remote_address_group_id")


def rule_dict(rule):
    """An openstacksdk SecurityGroupRule as a plain dict (RULE_KEYS);
    openstacksdk calls ``ethertype`` ``ether_type``."""
    return {key: getattr(rule, "ether_type" if key == "ethertype" else key,
                         None) for key in RULE_KEYS}
