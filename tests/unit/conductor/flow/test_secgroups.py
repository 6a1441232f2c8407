"""A VM's CloudStack security groups as Neutron groups, against a Neutron
stand-in (fake_neutron.FakeNeutron keeps rules as Neutron does: a new group
allows all egress, duplicates and port 0 are refused, a group in use cannot
be deleted, deleting one drops the rules that allow it).

The real thing (a real Neutron, the groups on the ports of a migrated
server) is in tests/e2e/test_security_groups.py.
"""

import pytest

from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import resources
from cs2os_agent.conductor.flow import secgroups
from tests.unit.conductor.flow.fake_neutron import MID
from tests.unit.conductor.flow.fake_neutron import FakeNeutron


def rule(protocol="all", cidr="0.0.0.0/0", group=None, **ports):
    """A rule as discovery normalises it."""
    values = {"protocol": protocol, "startport": None, "endport": None,
              "icmptype": None, "icmpcode": None,
              "cidr": None if group else cidr,
              "group": group["name"] if group else None,
              "group_account": "acme" if group else None,
              "group_id": group["id"] if group else None}
    values.update(ports)
    return values


def group(gid, name, ingress=(), egress=()):
    return {"id": gid, "name": name, "description": name,
            "ingress": list(ingress), "egress": list(egress)}


WEB = group("cs-web", "web", ingress=[
    rule("tcp", startport=22, endport=22), rule("icmp")])
APP = group("cs-app", "app",
            ingress=[rule("tcp", group=WEB, startport=8080, endport=8080)],
            egress=[rule("tcp", "203.0.113.0/24", startport=443,
                         endport=443)])


def source(*groups, referenced=()):
    return {"name": "web-1", "securitygroups": list(groups),
            "referenced_securitygroups": list(referenced)}


class Ctx:
    def __init__(self, neutron, vm, own=None, mid=MID):
        self.id = mid
        self.network = neutron  # the target project's Neutron
        self.resources = {"security_groups": own} if own else {}
        self.migration = {"source": vm, "result": {}, "step": "ports"}
        self.committed = False
        self.events = []

    def guard(self):
        # Fencing (test_context.py); here, where it was called.
        self.network.calls.append(("guard", None))

    def resource(self, **values):
        resources.check(values)
        self.resources.update(values)

    def result(self, **values):
        self.migration["result"].update(values)

    def event(self, step, message, kind="info"):
        self.events.append((step, kind, message))


EGRESS_ALL = {("egress", "IPv4", None, None, None, None, None, None),
              ("egress", "IPv6", None, None, None, None, None, None)}


def test_a_vm_without_groups_gets_none_of_its_own():
    neutron = FakeNeutron()
    ctx = Ctx(neutron, {"name": "web-1", "securitygroups": []})
    assert secgroups.ensure(ctx) == []
    assert neutron.groups == {} and neutron.calls == []
    assert ctx.migration["result"]["security_groups"] == []
    # A record of a release before security groups: the same.
    assert secgroups.ensure(Ctx(neutron, {"name": "old"})) == []


@pytest.mark.parametrize("cloudstack, neutron", [
    (rule("tcp", startport=22, endport=22),
     ("ingress", "IPv4", "tcp", 22, 22, None, None, None)),
    (rule("udp", "10.0.0.0/8", startport=1000, endport=2000),
     ("ingress", "IPv4", "udp", 1000, 2000, "10.0.0.0/8", None, None)),
    # Every port: no range (discovery made 0-65535 None).
    (rule("tcp"), ("ingress", "IPv4", "tcp", None, None, None, None, None)),
    # Neutron refuses port 0.
    (rule("tcp", startport=0, endport=80),
     ("ingress", "IPv4", "tcp", 1, 80, None, None, None)),
    (rule("icmp"), ("ingress", "IPv4", "icmp", None, None, None, None, None)),
    (rule("icmp", icmptype=8, icmpcode=0),
     ("ingress", "IPv4", "icmp", 8, 0, None, None, None)),
    (rule("icmp", icmptype=3),
     ("ingress", "IPv4", "icmp", 3, None, None, None, None)),
    (rule("all", "192.0.2.0/24"),
     ("ingress", "IPv4", None, None, None, "192.0.2.0/24", None, None)),
    (rule("47", "192.0.2.7/32"),
     ("ingress", "IPv4", "47", None, None, "192.0.2.7/32", None, None)),
    (rule("tcp", "2001:db8::/32", startport=80, endport=80),
     ("ingress", "IPv6", "tcp", 80, 80, "2001:db8::/32", None, None)),
    (rule("icmp", "::/0"),
     ("ingress", "IPv6", "ipv6-icmp", None, None, None, None, None)),
    (rule("tcp", group=WEB, startport=5432, endport=5432),
     ("ingress", "IPv4", "tcp", 5432, 5432, None, "sg-web", None)),
])
def test_cloudstack_rules_map_to_neutron_rules(cloudstack, neutron):
    spec = secgroups.neutron_rule("ingress", cloudstack, "sg-web")
    assert secgroups.rule_key(spec) == neutron


def test_rules_compare_as_neutron_compares_them():
    base = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
            "port_range_min": 22, "port_range_max": 22,
            "remote_ip_prefix": None, "remote_group_id": None}
    key = secgroups.rule_key(base)
    for same in ({"protocol": "6"}, {"protocol": "TCP"},
                 {"remote_ip_prefix": "0.0.0.0/0"}):
        assert secgroups.rule_key(dict(base, **same)) == key
    assert secgroups.rule_key(dict(base, protocol="tcp", port_range_min=1,
                                   port_range_max=65535)) == \
        secgroups.rule_key(dict(base, port_range_min=None,
                                port_range_max=None))
    assert secgroups.rule_key(dict(base, port_range_max=23)) != key


def test_groups_are_made_with_the_cloudstack_rules():
    neutron = FakeNeutron()
    ctx = Ctx(neutron, source(WEB, APP))
    ids = secgroups.ensure(ctx)
    web, app = (neutron.groups[i] for i in ids)
    assert (web.name, app.name) == ("web", "app")
    assert web.description == "cs2os: CloudStack security group cs-web (web)"
    assert secgroups.marker_of(app) == "cs-app"
    # No egress rules in CloudStack: all egress, as the new group has it.
    assert neutron.rules_of(web.id) == {
        ("ingress", "IPv4", "tcp", 22, 22, None, None, None),
        ("ingress", "IPv4", "icmp", None, None, None, None, None),
    } | EGRESS_ALL
    # Egress rules: only those.
    assert neutron.rules_of(app.id) == {
        ("ingress", "IPv4", "tcp", 8080, 8080, None, "web", None),
        ("egress", "IPv4", "tcp", 443, 443, "203.0.113.0/24", None, None)}
    assert ctx.resources["security_groups"] == ids
    assert ctx.migration["result"]["security_groups"] == [
        {"cloudstack_id": "cs-web", "name": "web", "neutron_id": web.id,
         "reused": False, "attached": True},
        {"cloudstack_id": "cs-app", "name": "app", "neutron_id": app.id,
         "reused": False, "attached": True}]
    # A VM in groups with and without egress rules: CloudStack allowed it
    # only those rules, Neutron allows all.  Said, not hidden.
    ((step, kind, message),) = ctx.events
    assert (step, kind) == ("ports", "warning")
    assert "group(s) web, which have no egress rules, allow all" in message


def test_every_write_is_guarded_and_recorded_before_use():
    neutron = FakeNeutron()
    ctx = Ctx(neutron, source(WEB, APP))
    secgroups.ensure(ctx)
    calls = neutron.calls
    writes = [i for i, (op, _id) in enumerate(calls) if op != "guard"]
    assert writes and all(calls[i - 1][0] == "guard" for i in writes)


def test_a_second_migration_reuses_the_groups():
    neutron = FakeNeutron()
    first = secgroups.ensure(Ctx(neutron, source(WEB, APP)))
    neutron.calls.clear()
    ctx = Ctx(neutron, source(APP, referenced=[WEB]), mid="m-2")
    assert secgroups.ensure(ctx) == [first[1]]
    assert [c for c in neutron.calls if c[0] != "guard"] == []
    assert ctx.resources.get("security_groups") is None
    assert [(g["name"], g["reused"], g["attached"])
            for g in ctx.migration["result"]["security_groups"]] == [
        ("app", True, True), ("web", True, False)]


def test_a_marked_group_whose_rules_differ_is_left_alone():
    neutron = FakeNeutron()
    (old,) = secgroups.ensure(Ctx(neutron, source(WEB)))
    # CloudStack's web allows port 80 too now.
    web = dict(WEB, ingress=WEB["ingress"] + [
        rule("tcp", startport=80, endport=80)])
    (new,) = secgroups.ensure(Ctx(neutron, source(web), mid="m-2"))
    assert new != old
    assert len(neutron.rules_of(old)) == 4  # untouched
    assert ("ingress", "IPv4", "tcp", 80, 80, None, None, None) in \
        neutron.rules_of(new)
    # Its owner added a rule to the Neutron group: not the same any more.
    neutron.create_security_group_rule(new, "ingress", protocol="udp")
    (third,) = secgroups.ensure(Ctx(neutron, source(web), mid="m-3"))
    assert third not in (old, new)


def test_a_group_the_vm_is_not_in_is_made_for_the_rule_that_allows_it():
    neutron = FakeNeutron()
    ctx = Ctx(neutron, source(APP, referenced=[WEB]))
    (app,) = secgroups.ensure(ctx)
    (web,) = neutron.find_security_groups("web")
    assert ("ingress", "IPv4", "tcp", 8080, 8080, None, "web", None) in \
        neutron.rules_of(app)
    assert sorted(ctx.resources["security_groups"]) == sorted([app, web.id])
    # The next VM is in web: the same group.
    assert secgroups.ensure(Ctx(neutron, source(WEB), mid="m-2")) == [web.id]


def test_groups_that_allow_each_other_are_reused_together():
    a = group("cs-a", "a")
    b = group("cs-b", "b", ingress=[rule(group=a)])
    a["ingress"] = [rule(group=b), rule(group=a)]
    neutron = FakeNeutron()
    first = secgroups.ensure(Ctx(neutron, source(a, b)))
    assert neutron.rules_of(first[0]) >= {
        ("ingress", "IPv4", None, None, None, None, "b", None),
        ("ingress", "IPv4", None, None, None, None, "a", None)}
    neutron.calls.clear()
    again = secgroups.ensure(Ctx(neutron, source(b, referenced=[a]),
                                 mid="m-2"))
    assert again == [first[1]]
    assert [c for c in neutron.calls if c[0] != "guard"] == []


def test_a_match_that_allows_the_wrong_web_is_not_reused():
    neutron = FakeNeutron()
    # Marked groups someone made: a "web" with other rules, and an "app"
    # with app's rules that allows that web.
    twin = neutron.create_security_group("web", secgroups.MARKER % WEB)
    copy = neutron.create_security_group("app", secgroups.MARKER % APP)
    for r in neutron.security_group_rules(copy.id):
        neutron.delete_security_group_rule(r["id"])
    neutron.create_security_group_rule(copy.id, "ingress", protocol="tcp",
                                       port_range_min=8080,
                                       port_range_max=8080,
                                       remote_group_id=twin.id)
    neutron.create_security_group_rule(
        copy.id, "egress", protocol="tcp", port_range_min=443,
        port_range_max=443, remote_ip_prefix="203.0.113.0/24")
    web, app = secgroups.ensure(Ctx(neutron, source(WEB, APP)))
    assert twin.id != web and copy.id != app
    assert ("ingress", "IPv4", "tcp", 8080, 8080, None, "web", None) in \
        neutron.rules_of(app)
    assert [r["remote_group_id"] for r in neutron.security_group_rules(app)
            if r["remote_group_id"]] == [web]


def test_a_crash_midway_is_finished_by_the_next_call():
    neutron = FakeNeutron()
    ctx = Ctx(neutron, source(WEB, APP))
    create_rule = neutron.create_security_group_rule
    made = []

    def crash_on_second(*args, **kwargs):
        if made:
            raise exception.OpenStackError(operation="create rule",
                                           reason="conductor died")
        made.append(create_rule(*args, **kwargs))
        return made[-1]

    neutron.create_security_group_rule = crash_on_second
    with pytest.raises(exception.OpenStackError):
        secgroups.ensure(ctx)
    half = list(ctx.resources["security_groups"])
    assert len(half) == 2  # recorded as soon as made
    neutron.create_security_group_rule = create_rule
    ids = secgroups.ensure(ctx)
    # The half-made groups were this migration's, unused: gone.
    assert not set(half) & set(neutron.groups)
    assert sorted(neutron.groups) == sorted(ids)
    assert ctx.resources["security_groups"] == ids
    # Once complete, a call again changes nothing.
    neutron.calls.clear()
    assert secgroups.ensure(ctx) == ids
    assert [c for c in neutron.calls if c[0] != "guard"] == []
    assert [g["reused"] for g in ctx.migration["result"][
        "security_groups"]] == [False, False]


def test_cloudstacks_default_group_is_not_named_default():
    neutron = FakeNeutron()
    default = group("cs-default", "default", ingress=[rule("icmp")])
    (gid,) = secgroups.ensure(Ctx(neutron, source(default)))
    assert neutron.groups[gid].name == "cloudstack-default"
    assert secgroups.ensure(Ctx(neutron, source(default), mid="m-2")) == [gid]


def test_a_rule_allowing_an_unlisted_group_stops_the_step():
    lost = dict(rule(group=WEB), group_id=None, group="gone")
    neutron = FakeNeutron()
    with pytest.raises(exception.Invalid, match="allows group gone"):
        secgroups.ensure(Ctx(neutron, source(group("x", "x",
                                                   ingress=[lost]))))
    assert neutron.groups == {}


def test_undo_deletes_what_it_made_and_leaves_what_is_used():
    neutron = FakeNeutron()
    reused = secgroups.ensure(Ctx(neutron, source(WEB), mid="m-0"))
    ctx = Ctx(neutron, source(WEB, APP))
    web, app = secgroups.ensure(ctx)
    assert web == reused[0]
    assert ctx.resources["security_groups"] == [app]
    # The ports first.
    ctx.resources["ports"] = [{"index": 0, "id": "port-0"}]
    assert secgroups.undo(ctx) is None
    ctx.resources["ports"] = []
    assert secgroups.undo(ctx) == "deleted security groups %s" % app
    assert web in neutron.groups and app not in neutron.groups
    assert ctx.resources["security_groups"] == []
    assert secgroups.undo(ctx) is None


def test_undo_leaves_a_group_another_port_or_rule_uses():
    neutron = FakeNeutron()
    ctx = Ctx(neutron, source(WEB, APP))
    web, app = secgroups.ensure(ctx)
    # Another migration's port is in app; another group allows web.
    neutron.create_port("theirs", "net-a", "1e:00:00:00:00:09",
                        security_groups=[app])
    other = neutron.create_security_group("db", "someone's")
    neutron.create_security_group_rule(other.id, "ingress",
                                       remote_group_id=web)
    message = secgroups.undo(ctx)
    assert {web, app} <= set(neutron.groups)
    assert message == "left security groups %s, %s: a port or another " \
        "group's rule uses them" % (web, app)
    assert ctx.resources["security_groups"] == [web, app]


def test_undo_of_groups_that_allow_each_other():
    a = group("cs-a", "a")
    b = group("cs-b", "b", ingress=[rule(group=a)])
    a["ingress"] = [rule(group=b)]
    neutron = FakeNeutron()
    ctx = Ctx(neutron, source(a, b))
    ids = secgroups.ensure(ctx)
    assert secgroups.undo(ctx) == "deleted security groups %s" % \
        ", ".join(ids)
    assert neutron.groups == {} and neutron.rules == []


def test_nothing_is_undone_after_the_commit():
    neutron = FakeNeutron()
    ctx = Ctx(neutron, source(WEB))
    secgroups.ensure(ctx)
    ctx.committed = True
    assert secgroups.undo(ctx) is None
    assert len(neutron.groups) == 1
