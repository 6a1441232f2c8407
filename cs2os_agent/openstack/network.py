"""Neutron through openstacksdk: the ports that carry a VM's identity."""

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
        try:
            network = self.conn.network.find_network(ref,
                                                     ignore_missing=True)
        except sdk_exc.DuplicateResource:
            raise exception.Invalid(
                reason="Neutron network name %s is ambiguous; map to its "
                "id" % ref) from None
        except sdk_exc.SDKException as exc:
            raise exception.OpenStackError(
                operation="find network %s" % ref, reason=exc) from None
        if network is None:
            raise exception.Invalid(
                reason="Neutron has no network with id or name %s" % ref)
        return network

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
                    description=None):
        kwargs = {"name": name, "network_id": network_id,
                  "mac_address": mac, "description": description or ""}
        if ip is not None:
            kwargs["fixed_ips"] = [{"subnet_id": subnet_id,
                                    "ip_address": ip}]
        return self._call("create port %s" % name,
                          self.conn.network.create_port, **kwargs)

    def get_port(self, port_id):
        return self._call("show port %s" % port_id,
                          self.conn.network.get_port, port_id)

    def delete_port(self, port_id):
        self._call("delete port %s" % port_id,
                   self.conn.network.delete_port, port_id,
                   ignore_missing=True)
