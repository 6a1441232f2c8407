"""A CloudStack VM's security groups as Neutron security groups.

In a security-group-enabled zone each CloudStack group of the VM becomes a
Neutron group of the target project with the same ingress and egress
rules, put on every port of the migrated server; a VM without groups gets
none of its own, and Neutron gives its ports the project's default group,
as Nova would.

- **One Neutron group per CloudStack group**, marked in its description
  (MARKER), named after it (CloudStack's ``default`` as
  ``cloudstack-default``: Neutron keeps that name for its own).  A marked
  group with exactly the rules the CloudStack group maps to is reused, by
  every migration of a VM in that group; one whose rules differ (the
  CloudStack group changed since, or its owner edited the Neutron one) is
  left as it is, and a new one is made.
- **Egress.** CloudStack lets a VM whose groups have no egress rules send
  anything, and once they have some, only what those allow (the KVM
  agent's security_group.py: a final RETURN or DROP in the VM's egress
  chain).  A new Neutron group allows all egress: that stays when the
  CloudStack group has no egress rules and goes when it has some.
- **A rule that allows another CloudStack group** allows that group's
  Neutron counterpart (remote_group_id), found or made the same way even
  when the VM is not in it.
- **Rollback** deletes the groups this migration made (resources
  ``security_groups``), after its ports, unless a port or another group's
  rule uses them: those are left, and named.
"""

import ipaddress
import re

from cs2os_agent.common import exception

MARKER = "cs2os: CloudStack security group %(id)s (%(name)s)"
_MARKED = re.compile(r"^cs2os: CloudStack security group (\S+)")

# What a new Neutron group allows: every egress, and what a CloudStack
# group without egress rules allows.
ALLOW_ALL_EGRESS = [
    {"direction": "egress", "ethertype": ethertype, "protocol": None,
     "port_range_min": None, "port_range_max": None,
     "remote_ip_prefix": None, "remote_group_id": None}
    for ethertype in ("IPv4", "IPv6")]

# Neutron takes a protocol by name or number and keeps what it was given.
_PROTOCOL_NAMES = {"1": "icmp", "6": "tcp", "17": "udp", "58": "ipv6-icmp"}
_ICMP6 = ("icmp", "icmpv6", "ipv6-icmp")


def neutron_name(group):
    if group["name"].lower() == "default":
        return "cloudstack-default"
    return group["name"]


def marker_of(neutron_group):
    """The CloudStack group id a Neutron group's description names."""
    match = _MARKED.match(neutron_group.description or "")
    return match.group(1) if match else None


def neutron_rule(direction, rule, remote_group_id=None):
    """The Neutron rule (create_security_group_rule's arguments) of a
    CloudStack rule as discovery normalised it; ``remote_group_id``: the
    Neutron group of the CloudStack group the rule allows."""
    protocol = rule["protocol"]
    spec = {"direction": direction, "ethertype": "IPv4",
            "protocol": None if protocol == "all" else protocol,
            "port_range_min": None, "port_range_max": None,
            "remote_ip_prefix": None, "remote_group_id": None}
    if protocol in ("tcp", "udp") and rule["startport"] is not None:
        # Neutron refuses port 0.
        spec["port_range_min"] = max(rule["startport"], 1)
        spec["port_range_max"] = max(rule["endport"] or rule["startport"], 1)
    elif protocol == "icmp" and rule["icmptype"] is not None:
        spec["port_range_min"] = rule["icmptype"]
        spec["port_range_max"] = rule["icmpcode"]
    if rule["group"]:
        # CloudStack allows the IPv4 addresses of the group's VMs.
        spec["remote_group_id"] = remote_group_id
        return spec
    network = ipaddress.ip_network(rule["cidr"], strict=False)
    spec["ethertype"] = "IPv%d" % network.version
    if network.prefixlen:
        spec["remote_ip_prefix"] = str(network)
    if network.version == 6 and protocol == "icmp":
        spec["protocol"] = "ipv6-icmp"
    return spec


def expected_rules(group, remote):
    """The Neutron rules of CloudStack group ``group``; ``remote`` maps a
    CloudStack group id to what stands for it in remote_group_id."""
    rules = [neutron_rule(direction, rule, remote(rule["group_id"])
                          if rule["group"] else None)
             for direction in ("ingress", "egress")
             for rule in group[direction]]
    if not group["egress"]:
        rules.extend(dict(r) for r in ALLOW_ALL_EGRESS)
    return rules


def rule_key(rule, remote=lambda group_id: group_id):
    """What makes two rules the same, as Neutron sees it (its _rule_to_key):
    any address is no prefix, 1-65535 is every port, a protocol number is
    its name.  ``remote`` maps remote_group_id."""
    prefix = rule.get("remote_ip_prefix")
    if prefix:
        network = ipaddress.ip_network(prefix, strict=False)
        prefix = str(network) if network.prefixlen else None
    protocol = rule.get("protocol")
    if protocol is not None:
        protocol = str(protocol).lower()
        protocol = None if protocol == "any" else \
            _PROTOCOL_NAMES.get(protocol, protocol)
    if rule.get("ethertype") == "IPv6" and protocol in _ICMP6:
        protocol = "ipv6-icmp"
    ports = (rule.get("port_range_min"), rule.get("port_range_max"))
    if protocol in ("tcp", "udp") and ports == (1, 65535):
        ports = (None, None)
    group = rule.get("remote_group_id")
    return (rule.get("direction"), rule.get("ethertype"), protocol) + ports \
        + (prefix, remote(group) if group else None,
           rule.get("remote_address_group_id"))


def ensure(ctx):
    """The Neutron groups of the VM's CloudStack groups, found or made in
    the target project: their ids, in the VM's order, for every port; []
    when the VM has none (its ports get the project's default group)."""
    source = ctx.migration["source"]
    attached = source.get("securitygroups") or []
    if not attached:
        ctx.result(security_groups=[])
        return []
    groups = attached + (source.get("referenced_securitygroups") or [])
    _check_sources(groups)
    neutron = ctx.network
    own = list(ctx.resources.get("security_groups") or [])
    chosen = _choose(neutron, groups, own)
    # An earlier attempt's group whose rules are not (or no longer) the
    # CloudStack group's: made by this migration, so gone if unused.
    stale = [gid for gid in own
             if gid not in {g.id for g in chosen.values() if g}]
    if stale:
        deleted, _kept = _delete_unused(ctx, neutron, stale)
        own = [gid for gid in own if gid not in deleted]
        ctx.resource(security_groups=own)
    made = []
    for group in groups:
        if chosen[group["id"]] is None:
            ctx.guard()
            new = neutron.create_security_group(
                neutron_name(group), MARKER % group)
            own.append(new.id)
            ctx.resource(security_groups=own)
            chosen[group["id"]] = new
            made.append(group)
    ids = {csid: g.id for csid, g in chosen.items()}
    for group in made:
        _converge(ctx, neutron, ids[group["id"]],
                  expected_rules(group, ids.get))
    _warn_egress(ctx, attached)
    ctx.result(security_groups=[
        {"cloudstack_id": g["id"], "name": g["name"],
         "neutron_id": ids[g["id"]], "reused": ids[g["id"]] not in own,
         "attached": g in attached} for g in groups])
    return list(dict.fromkeys(ids[g["id"]] for g in attached))


def _check_sources(groups):
    known = {g["id"] for g in groups}
    for group in groups:
        for rule in group["ingress"] + group["egress"]:
            if rule["group"] and rule["group_id"] not in known:
                raise exception.Invalid(
                    reason="a rule of CloudStack security group %s (%s) "
                    "allows group %s of account %s, which CloudStack did "
                    "not list" % (group["name"], group["id"], rule["group"],
                                  rule["group_account"]))


def _choose(neutron, groups, own):
    """{CloudStack id: the Neutron group to use, or None: make one}.

    A marked group qualifies when its rules are the CloudStack group's,
    remote groups compared by their markers; then the choice must hold
    together: a chosen group's rule allows the group chosen for the
    CloudStack group it names, or that group is not chosen after all.
    This migration's own groups (an earlier attempt's) come first.
    """
    marked, rules = {}, {}
    candidates = {}
    for group in groups:
        found = [g for g in neutron.find_security_groups(neutron_name(group))
                 if marker_of(g) == group["id"]]
        for g in found:
            marked[g.id] = group["id"]
            rules[g.id] = neutron.security_group_rules(g.id)
        candidates[group["id"]] = sorted(
            found, key=lambda g: (g.id not in own, g.id))

    def by_marker(group_id):
        return ("cloudstack", marked[group_id]) if group_id in marked \
            else ("neutron", group_id)

    for group in groups:
        want = {rule_key(spec) for spec in expected_rules(
            group, lambda csid: ("cloudstack", csid))}
        candidates[group["id"]] = [
            g for g in candidates[group["id"]]
            if {rule_key(r, by_marker) for r in rules[g.id]} == want]

    def holds(group, chosen):
        # Each remote group of its rules is the one chosen for its marker.
        for rule in rules[group.id]:
            remote = rule["remote_group_id"]
            if remote and getattr(chosen[marked[remote]], "id",
                                  None) != remote:
                return False
        return True

    while True:
        chosen = {csid: (found[0] if found else None)
                  for csid, found in candidates.items()}
        wrong = [(csid, g) for csid, g in chosen.items()
                 if g is not None and not holds(g, chosen)]
        if not wrong:
            return chosen
        for csid, g in wrong:
            candidates[csid].remove(g)


def _converge(ctx, neutron, group_id, wanted):
    """Make group ``group_id`` (this migration's own) hold exactly the
    rules ``wanted``: Neutron's allow-all egress goes unless wanted."""
    want = {rule_key(spec): spec for spec in wanted}
    have = set()
    for rule in neutron.security_group_rules(group_id):
        key = rule_key(rule)
        if key in want and key not in have:
            have.add(key)
            continue
        ctx.guard()
        neutron.delete_security_group_rule(rule["id"])
    for key, spec in want.items():
        if key not in have:
            ctx.guard()
            neutron.create_security_group_rule(group_id, **spec)


def _warn_egress(ctx, attached):
    """CloudStack sums up egress per VM, Neutron per group: a VM in groups
    with egress rules and groups without sends only what the rules allow
    in CloudStack, and anything in Neutron."""
    open_groups = [g["name"] for g in attached if not g["egress"]]
    if open_groups and len(open_groups) < len(attached):
        ctx.event(ctx.migration.get("step") or "ports",
                  "CloudStack let VM %s send only what the egress rules of "
                  "its security groups allow; in Neutron its group(s) %s, "
                  "which have no egress rules, allow all egress"
                  % (ctx.migration["source"].get("name"),
                     ", ".join(open_groups)), kind="warning")


def _delete_unused(ctx, neutron, group_ids):
    """Delete those of ``group_ids`` no port uses and no rule of another
    group allows (Neutron would drop such a rule with the group):
    (deleted, kept)."""
    doomed = [gid for gid in group_ids
              if not neutron.ports_with_security_group(gid)]
    users = {gid: {r["security_group_id"]
                   for r in neutron.security_group_rules(remote_group_id=gid)}
             - {gid} for gid in doomed}
    while True:
        held = [gid for gid in doomed if users[gid] - set(doomed)]
        if not held:
            break
        doomed = [gid for gid in doomed if gid not in held]
    deleted = []
    for gid in doomed:
        ctx.guard()
        if neutron.delete_security_group(gid):
            deleted.append(gid)
    return deleted, [gid for gid in group_ids if gid not in deleted]


def undo(ctx):
    """Delete the groups this migration made, once its ports are gone;
    those still in use (another migration reused them) are left."""
    resources = ctx.resources
    if ctx.committed or resources.get("ports") or resources.get("server_id"):
        return None
    group_ids = list(resources.get("security_groups") or [])
    if not group_ids:
        return None
    deleted, kept = _delete_unused(ctx, ctx.network, group_ids)
    ctx.resource(security_groups=kept)
    said = []
    if deleted:
        said.append("deleted security groups %s" % ", ".join(deleted))
    if kept:
        said.append("left security groups %s: a port or another group's "
                    "rule uses them" % ", ".join(kept))
    return "; ".join(said)
