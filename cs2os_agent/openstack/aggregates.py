"""Nova host aggregates, as a migration placed on one reads them.

A request's ``aggregate`` names a Nova host aggregate (its name, id or
uuid); the conductor spreads such migrations over the aggregate's hosts
(conductor/flow/placement.py).  Reading aggregates and compute services
needs Nova's admin policy, as check_compute_host does already.
"""

from openstack import exceptions as sdk_exc

from cs2os_agent.common import exception


def find(conn, ref):
    """(name, sorted hosts) of the aggregate ``ref`` names; Invalid when
    none or several do.  Listed, not looked up by id: Nova's ids are
    numbers, and a name that looks like one must still be found."""
    try:
        aggregates = list(conn.compute.aggregates())
    except sdk_exc.SDKException as exc:
        raise exception.OpenStackError(
            operation="list Nova's host aggregates", reason=exc) from None
    by_id = [a for a in aggregates
             if ref in (str(a.id), a.uuid or "")]
    found = by_id or [a for a in aggregates if a.name == ref]
    if not found:
        raise exception.Invalid(
            reason="Nova has no host aggregate %s" % ref)
    if len(found) > 1:
        raise exception.Invalid(
            reason="%d Nova host aggregates are called %s: name it by id "
            "(%s)" % (len(found), ref,
                      ", ".join(str(a.id) for a in found)))
    aggregate = found[0]
    return aggregate.name, sorted(aggregate.hosts or [])


def compute_states(conn, hosts):
    """{host: why it cannot take a migration, or None when its
    nova-compute is enabled and up} for each of ``hosts``."""
    try:
        services = list(conn.compute.services(binary="nova-compute"))
    except sdk_exc.SDKException as exc:
        raise exception.OpenStackError(
            operation="list Nova's compute services", reason=exc) from None
    by_host = {s.host: s for s in services}
    states = {}
    for host in hosts:
        service = by_host.get(host)
        if service is None:
            states[host] = "no nova-compute service"
        elif service.status != "enabled" or service.state != "up":
            states[host] = "nova-compute is %s and %s" % (
                service.status, service.state)
        else:
            states[host] = None
    return states
