"""Whose VM it is: the Keystone project a migration lands in.

A CloudStack VM belongs to an account of a domain, or to a CloudStack
project (then CloudStack names the project, not an account).  The request's
``project`` wins; else the request's ``project_map``, then ``[cloudstack]
project_map`` maps the owner (conductor/maps.py).  An
owner with no entry stops the migration naming the owner and the option:
nothing lands in cs2os's own project unless the operator mapped it there.
"""

from cs2os_agent.common import exception
from cs2os_agent.conductor import maps

CATCH_ALL = "*"


def map_keys(vm):
    """The project_map keys that may name this VM's owner, first wins."""
    if vm.get("projectid"):
        keys = [vm["projectid"], vm.get("project")]
    else:
        account = vm.get("account")
        keys = ["%s/%s" % (domain, account)
                for domain in (vm.get("domainpath"), vm.get("domain"))
                if domain and account]
    seen = []
    for key in keys:
        if key and key not in seen:
            seen.append(key)
    return seen


def describe(vm):
    if vm.get("projectid"):
        return "CloudStack project %s (%s)" % (vm.get("project"),
                                               vm["projectid"])
    return "CloudStack account %s of domain %s" % (
        vm.get("account"), vm.get("domainpath") or vm.get("domain"))


def target_project(ctx, vm):
    """(Keystone project, how it was chosen) for the migration of ``vm``:
    the request's project; else the request's project_map, else
    [cloudstack] project_map (each: the owner's keys, then '*')."""
    options = ctx.migration.get("options") or {}
    ref, chosen_by = options.get("project"), "request"
    if not ref:
        found = maps.choose(ctx, "project_map", map_keys(vm) + [CATCH_ALL])
        if found is None:
            raise exception.Invalid(
                reason="%s owns VM %s and %s: add one "
                "of %s (or %s for every owner) mapped to a Keystone "
                "project, or name the project in the request"
                % (describe(vm), vm.get("name"), _maps_read(options),
                   ", ".join(map_keys(vm)) or "its owner", CATCH_ALL))
        ref, key, where = found
        chosen_by = "%s (%s)" % (where, key)
    try:
        project = ctx.clients.openstack.find_project(ref)
    except exception.Invalid as exc:
        raise exception.Invalid(
            reason="%s, named by the %s" % (exc.kwargs.get("reason"),
                                            chosen_by)) from None
    return project, chosen_by


def _maps_read(options):
    """Which maps had no entry, as the error names them."""
    if options.get("project_map"):
        return "neither the request's project_map nor [cloudstack] " \
            "project_map has an entry for it"
    return "[cloudstack] project_map has no entry for it"


def check_access(ctx, project):
    """cs2os's [openstack] user can work in ``project`` (a token scoped to
    it); else Invalid saying which role assignment is missing."""
    compute, _network = ctx.clients.in_project(project.id)
    try:
        compute.own_identity()
    except exception.OpenStackError as exc:
        _project, user = ctx.clients.openstack.own_identity()
        raise exception.Invalid(
            reason="cs2os's OpenStack user cannot act in Keystone project "
            "%s (%s): %s; give it a role there, e.g. openstack role add "
            "--user %s --project %s admin"
            % (project.name, project.id, exc.kwargs.get("reason"), user,
               project.id)) from None


def record(ctx, project, chosen_by):
    """Record the target project; refuse to move it while what an earlier
    attempt made (server, ports, security groups) still lives in the
    project recorded before."""
    recorded = ctx.migration.get("target_project_id")
    leftovers = (ctx.resources.get("server_id") or ctx.resources.get("ports")
                 or ctx.resources.get("security_groups"))
    if recorded and recorded != project.id and leftovers:
        raise exception.Invalid(
            reason="the target project changed from %s to %s (%s) while "
            "an earlier attempt's server, ports or security groups are "
            "still in %s: cancel the migration (its rollback removes "
            "them) and retry"
            % (recorded, project.id, chosen_by, recorded))
    ctx.save(target_project_id=project.id)
    ctx.result(project={"id": project.id, "name": project.name,
                        "chosen_by": chosen_by})
