"""Fill the minicloud's Keystone catalog, Nova's flavors and Cinder's volume
type (openstacksdk).

    register.py catalog   service project/users, demo project/user, endpoints
    register.py flavors   the flavor set
    register.py volumes HOST TIMEOUT TYPE BACKEND
                          Cinder's volume type TYPE (public, on the backend
                          of volume_backend_name BACKEND; cinder.conf's
                          default_volume_type names it), then wait until
                          cinder-volume on HOST (every backend) is up
    register.py wait-service HOST TIMEOUT
                          until nova-compute on HOST has registered, up
    register.py wait-hypervisor HOST TIMEOUT
                          until HOST's hypervisor is listed (after
                          discover_hosts) and has an inventory in Placement
    register.py wait-agent HOST TIMEOUT
                          until neutron-openvswitch-agent on HOST is alive
    register.py queue-ready QUEUE
                          exit 0 if QUEUE exists on the cloud's RabbitMQ
                          vhost with a consumer, 1 if not (one look)

Run by up.sh with the minicloud venv's Python.  One process with
openstacksdk takes ~2 s where the same through the `openstack` CLI takes
over a minute (a Python start per command).  Idempotent.
"""

import os
import sys
import time

# openstack (slow to import) is imported where needed: queue-ready is polled.

SERVICES = [
    # name, type, port variable, path
    ("glance", "image", "MC_GLANCE_PORT", ""),
    ("placement", "placement", "MC_PLACEMENT_PORT", ""),
    ("nova", "compute", "MC_NOVA_PORT", "/v2.1"),
    ("neutron", "network", "MC_NEUTRON_PORT", ""),
    # Cinder's v3 API without the project id in the URL (microversion 3.67
    # on; the SDK, the CLI and Nova's cinderclient find it as block-storage,
    # volumev3 or volume).
    ("cinder", "block-storage", "MC_CINDER_PORT", "/v3"),
]

# name, id, RAM MiB, disk GiB, vCPUs.  Small: the guests of the tests are a
# boot sector, and several servers must fit beside the functional tests.
FLAVORS = [
    ("m1.tiny", "1", 64, 1, 1),
    ("m1.small", "2", 128, 2, 1),
    ("m1.medium", "3", 256, 4, 1),
    ("m1.large", "4", 512, 8, 2),
]


def connect():
    import openstack

    return openstack.connect(
        auth_url=os.environ["MC_AUTH_URL"],
        username="admin",
        password=os.environ["MC_ADMIN_PASSWORD"],
        project_name="admin",
        user_domain_name="Default",
        project_domain_name="Default",
        region_name=os.environ["MC_REGION"],
    )


def ensure_user(idc, name, password, project, role_names, roles):
    user = idc.find_user(name, domain_id="default")
    if user is None:
        user = idc.create_user(name=name, password=password,
                               domain_id="default",
                               default_project_id=project.id)
    for r in role_names:
        idc.assign_project_role_to_user(project, user, roles[r])
    return user


def catalog(conn):
    idc = conn.identity
    roles = {r.name: r for r in idc.roles()}
    for name in ("service", "member"):
        if name not in roles:
            roles[name] = idc.create_role(name=name)
    projects = {}
    for name in ("service", "demo"):
        projects[name] = (idc.find_project(name, domain_id="default")
                          or idc.create_project(name=name,
                                                domain_id="default"))
    for user, _stype, _port, _path in SERVICES:
        ensure_user(idc, user, os.environ["MC_SERVICE_PASSWORD"],
                    projects["service"], ("admin", "service"), roles)
    ensure_user(idc, "demo", os.environ["MC_DEMO_PASSWORD"],
                projects["demo"], ("member",), roles)
    for name, stype, port_var, path in SERVICES:
        svc = next(iter(idc.services(type=stype)), None) or \
            idc.create_service(name=name, type=stype)
        have = {e.interface for e in idc.endpoints(service_id=svc.id)}
        url = "http://127.0.0.1:%s%s" % (os.environ[port_var], path)
        for interface in ("public", "internal", "admin"):
            if interface not in have:
                idc.create_endpoint(service_id=svc.id, interface=interface,
                                    region_id=os.environ["MC_REGION"],
                                    url=url)


def flavors(conn):
    have = {f.name for f in conn.compute.flavors(is_public=None)}
    for name, flavor_id, ram, disk, vcpus in FLAVORS:
        if name not in have:
            conn.compute.create_flavor(name=name, id=flavor_id, ram=ram,
                                       disk=disk, vcpus=vcpus)


def volumes(conn, host, timeout, vtype, backend):
    """The volume type volumes get when none is named (cinder.conf's
    default_volume_type names it), and cinder-volume up."""
    if conn.block_storage.find_type(vtype) is None:
        conn.block_storage.create_type(
            name=vtype, is_public=True,
            extra_specs={"volume_backend_name": backend})
    _wait(_volume_service_not_ready, conn, host, timeout,
          what="cinder-volume")


def _service_not_ready(conn, host):
    services = list(conn.compute.services(binary="nova-compute", host=host))
    if not services or services[0].state != "up":
        return "services: %s" % [(s.host, s.state) for s in services]
    return None


def _hypervisor_not_ready(conn, host):
    hypervisors = list(conn.compute.hypervisors(details=True))
    for hv in hypervisors:
        if (hv.service_details or {}).get("host") != host:
            continue
        inventories = conn.placement.resource_provider_inventories(hv.id)
        if not any(i.resource_class == "VCPU" for i in inventories):
            return "no VCPU inventory in Placement for %s" % hv.id
        return None
    return "hypervisors: %s" % [(hv.name, hv.service_details)
                                for hv in hypervisors]


def _agent_not_ready(conn, host):
    agents = list(conn.network.agents(host=host,
                                      binary="neutron-openvswitch-agent"))
    if not agents or not agents[0].is_alive:
        return "agents: %s" % [(a.host, a.is_alive) for a in agents]
    return None


def _volume_service_not_ready(conn, host):
    services = [s for s in conn.block_storage.services(binary="cinder-volume")
                if s.host.split("@")[0] == host]
    if not services or any(s.state != "up" or s.status != "enabled"
                           for s in services):
        return "services: %s" % [(s.host, s.state, s.status)
                                 for s in services]
    return None


def _wait(check, conn, host, timeout, what="nova-compute"):
    import openstack

    deadline = time.monotonic() + float(timeout)
    while True:
        try:
            why = check(conn, host)
        except openstack.exceptions.SDKException as exc:
            why = str(exc)
        if why is None:
            return
        if time.monotonic() > deadline:
            sys.exit("%s on %s not ready after %ss (%s)"
                     % (what, host, timeout, why))
        time.sleep(0.5)


def wait_service(conn, host, timeout):
    _wait(_service_not_ready, conn, host, timeout)


def wait_hypervisor(conn, host, timeout):
    _wait(_hypervisor_not_ready, conn, host, timeout)


def wait_agent(conn, host, timeout):
    _wait(_agent_not_ready, conn, host, timeout,
          what="neutron-openvswitch-agent")


def queue_ready(queue):
    """Does the queue exist, with a consumer, on the cloud's vhost?"""
    import kombu

    # oslo.messaging's rabbit:// is kombu's amqp://
    url = "amqp" + os.environ["MC_TRANSPORT_URL"][len("rabbit"):]
    with kombu.Connection(url, connect_timeout=5) as conn:
        try:
            _name, _messages, consumers = conn.default_channel.queue_declare(
                queue, passive=True)
        except conn.channel_errors:
            return False  # no such queue (yet)
    return consumers > 0


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "queue-ready" and len(sys.argv) == 3:
        sys.exit(0 if queue_ready(sys.argv[2]) else 1)
    actions = {"catalog": catalog, "flavors": flavors,
               "wait-service": wait_service,
               "wait-hypervisor": wait_hypervisor,
               "wait-agent": wait_agent,
               "volumes": volumes}
    if what not in actions:
        sys.exit("usage: register.py catalog|flavors"
                 "|wait-service|wait-hypervisor|wait-agent HOST TIMEOUT"
                 "|volumes HOST TIMEOUT TYPE BACKEND|queue-ready QUEUE")
    conn = connect()
    try:
        actions[what](conn, *sys.argv[2:])
    finally:
        conn.close()


if __name__ == "__main__":
    main()
