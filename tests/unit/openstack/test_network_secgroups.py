"""NetworkClient's security group calls on a fake openstacksdk connection:
what reaches the SDK, what comes back, and errors named by operation.

The conductor's use of them: tests/unit/conductor/flow/test_secgroups.py;
a real Neutron: tests/e2e/test_security_groups.py.
"""

import types

import pytest
from openstack import exceptions as sdk_exc

from cs2os_agent.common import exception
from cs2os_agent.openstack import network as os_network

PROJECT = "p-target"


def sdk_rule(rid, group_id="sg-1", **values):
    # openstacksdk's SecurityGroupRule says ether_type for ethertype.
    fields = {"direction": "ingress", "ether_type": "IPv4", "protocol": None,
              "port_range_min": None, "port_range_max": None,
              "remote_ip_prefix": None, "remote_group_id": None,
              "remote_address_group_id": None}
    fields.update(values)
    return types.SimpleNamespace(id=rid, security_group_id=group_id,
                                 **fields)


class FakeNetwork:
    def __init__(self, conn):
        self.conn = conn
        self.groups_, self.rules_, self.ports_ = [], [], []
        self.calls = []
        self.error = None  # raised by the next call

    def _call(self, _method, *args, **kwargs):
        self.calls.append((_method, args, kwargs))
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def security_groups(self, **query):
        self._call("security_groups", **query)
        # leaky: as if Neutron ignored the filters.
        return iter(self.groups_)

    def security_group_rules(self, **query):
        self._call("security_group_rules", **query)
        return iter(self.rules_)

    def ports(self, **query):
        self._call("ports", **query)
        return iter(self.ports_)

    def create_security_group(self, **attrs):
        self._call("create_security_group", **attrs)
        return types.SimpleNamespace(id="sg-new", project_id=PROJECT,
                                     **attrs)

    def create_security_group_rule(self, **attrs):
        self._call("create_security_group_rule", **attrs)
        return sdk_rule("r-new", attrs.pop("security_group_id"), **attrs)

    def create_port(self, **attrs):
        self._call("create_port", **attrs)
        return types.SimpleNamespace(id="port-new", **attrs)

    def delete_security_group_rule(self, rule_id, ignore_missing):
        self._call("delete_security_group_rule", rule_id,
                   ignore_missing=ignore_missing)

    def delete_security_group(self, group_id, ignore_missing):
        self._call("delete_security_group", group_id,
                   ignore_missing=ignore_missing)


class FakeConn:
    current_project_id = PROJECT
    current_user_id = "u-cs2os"

    def __init__(self):
        self.network = FakeNetwork(self)


@pytest.fixture
def conn():
    return FakeConn()


def group(gid, name, project_id=PROJECT):
    return types.SimpleNamespace(id=gid, name=name, project_id=project_id,
                                 description="")


def test_groups_are_found_by_name_in_the_own_project_only(conn):
    ours = group("sg-1", "web")
    conn.network.groups_ = [group("sg-2", "web", project_id="p-other"),
                            group("sg-3", "web-2"), ours]
    neutron = os_network.NetworkClient(conn)
    assert neutron.find_security_groups("web") == [ours]
    assert conn.network.calls[-1][2] == {"name": "web",
                                         "project_id": PROJECT}


def test_rules_come_back_as_plain_dicts(conn):
    conn.network.rules_ = [
        sdk_rule("r-1", protocol="tcp", port_range_min=22,
                 port_range_max=22, remote_ip_prefix="10.0.0.0/8"),
        sdk_rule("r-2", group_id="sg-other"),
        sdk_rule("r-3", direction="egress", ether_type="IPv6",
                 remote_group_id="sg-9")]
    neutron = os_network.NetworkClient(conn)
    rules = neutron.security_group_rules("sg-1")
    assert conn.network.calls[-1][2] == {"security_group_id": "sg-1"}
    assert [r["id"] for r in rules] == ["r-1", "r-3"]
    assert rules[0] == {
        "id": "r-1", "security_group_id": "sg-1", "direction": "ingress",
        "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
        "port_range_max": 22, "remote_ip_prefix": "10.0.0.0/8",
        "remote_group_id": None, "remote_address_group_id": None}
    assert rules[1]["ethertype"] == "IPv6"
    # The rules, in any group, that allow a group.
    allowing = neutron.security_group_rules(remote_group_id="sg-9")
    assert conn.network.calls[-1][2] == {"remote_group_id": "sg-9"}
    assert [r["id"] for r in allowing] == ["r-3"]


def test_create_group_and_rule_send_only_what_is_set(conn):
    neutron = os_network.NetworkClient(conn)
    made = neutron.create_security_group("web", "cs2os: CloudStack ...")
    assert made.id == "sg-new"
    assert conn.network.calls[-1][2] == {
        "name": "web", "description": "cs2os: CloudStack ..."}
    rule = neutron.create_security_group_rule(
        "sg-new", "egress", "IPv4", "tcp", 443, 443, "203.0.113.0/24")
    assert conn.network.calls[-1][2] == {
        "security_group_id": "sg-new", "direction": "egress",
        "ether_type": "IPv4", "protocol": "tcp", "port_range_min": 443,
        "port_range_max": 443, "remote_ip_prefix": "203.0.113.0/24"}
    assert (rule["id"], rule["ethertype"]) == ("r-new", "IPv4")
    neutron.create_security_group_rule("sg-new", "ingress",
                                       remote_group_id="sg-web")
    assert conn.network.calls[-1][2] == {
        "security_group_id": "sg-new", "direction": "ingress",
        "ether_type": "IPv4", "remote_group_id": "sg-web"}


def test_a_port_gets_groups_only_when_given_some(conn):
    neutron = os_network.NetworkClient(conn)
    neutron.create_port("p", "net-1", "1e:00:00:00:00:01")
    assert "security_group_ids" not in conn.network.calls[-1][2]
    # None of its own: Neutron gives it the project's default group.
    neutron.create_port("p", "net-1", "1e:00:00:00:00:01",
                        security_groups=[])
    assert "security_group_ids" not in conn.network.calls[-1][2]
    neutron.create_port("p", "net-1", "1e:00:00:00:00:01",
                        security_groups=("sg-1", "sg-2"))
    assert conn.network.calls[-1][2]["security_group_ids"] == ["sg-1",
                                                               "sg-2"]


def test_ports_of_a_group(conn):
    port = types.SimpleNamespace(id="port-1", security_group_ids=["sg-1"])
    conn.network.ports_ = [port, types.SimpleNamespace(
        id="port-2", security_group_ids=["sg-2"])]
    neutron = os_network.NetworkClient(conn)
    assert neutron.ports_with_security_group("sg-1") == [port]
    assert conn.network.calls[-1][2] == {"security_groups": "sg-1"}


def test_delete_says_whether_the_group_is_gone(conn):
    neutron = os_network.NetworkClient(conn)
    assert neutron.delete_security_group("sg-1") is True
    assert conn.network.calls[-1][1:] == (("sg-1",),
                                          {"ignore_missing": True})
    conn.network.error = sdk_exc.ConflictException(
        message="Security Group sg-1 in use.", http_status=409)
    assert neutron.delete_security_group("sg-1") is False
    conn.network.error = sdk_exc.HttpException(message="neutron is down",
                                               http_status=503)
    with pytest.raises(exception.OpenStackError,
                       match="delete security group sg-1.*neutron is down"):
        neutron.delete_security_group("sg-1")


@pytest.mark.parametrize("call, operation", [
    (lambda n: n.find_security_groups("web"), "find security groups web"),
    (lambda n: n.create_security_group("web", ""),
     "create security group web"),
    (lambda n: n.security_group_rules("sg-1"),
     "list security group rules sg-1"),
    (lambda n: n.create_security_group_rule("sg-1", "ingress"),
     "create ingress rule in security group sg-1"),
    (lambda n: n.delete_security_group_rule("r-1"),
     "delete security group rule r-1"),
    (lambda n: n.ports_with_security_group("sg-1"),
     "list ports of security group sg-1"),
])
def test_errors_name_the_operation(conn, call, operation):
    conn.network.error = sdk_exc.HttpException(message="boom",
                                               http_status=500)
    with pytest.raises(exception.OpenStackError) as caught:
        call(os_network.NetworkClient(conn))
    assert operation in str(caught.value) and "boom" in str(caught.value)
