"""End-to-end fixtures: a real Keystone + Glance + Placement + Nova.

The cloud is the minicloud (tools/minicloud, seen through
tools/testbed/minicloud.py), started before the tests by
`tools/minicloud/minicloud.sh up` (after `tools/test-services.sh start`):
booting it takes about a minute, so it runs once for the whole session and
beyond.  A cloud that is not up fails the tests with the command that
starts it: these tests never skip.
"""

import contextlib
import json
import os
import uuid

import pytest

from cs2os_agent.common import context as cs2os_context
from cs2os_agent.conductor import rpcapi as conductor_rpcapi
from tools.testbed import agent_process
from tools.testbed import api_process
from tools.testbed import cloudstack_api
from tools.testbed import cloudstack_handlers
from tools.testbed import cloudstack_kvm
from tools.testbed import conductor_process
from tools.testbed import harness as ft
from tools.testbed import images
from tools.testbed import warm_chain
from tools.testbed.harness import wait_console
from tools.testbed.minicloud import HINT
from tools.testbed.minicloud import STATE_DIR
from tools.testbed.minicloud import Minicloud
from tools.testbed.minicloud import admin_auth
from tools.testbed.minicloud import smoke


@pytest.fixture(scope="session")
def minicloud():
    path = os.path.join(STATE_DIR, "minicloud.json")
    if not os.path.exists(path):
        pytest.fail("the minicloud is not up (no %s); %s" % (path, HINT),
                    pytrace=False)
    with open(path) as f:
        info = json.load(f)
    try:
        conn = smoke.connect(info)
        services = list(conn.compute.services(binary="nova-compute",
                                              host=info["compute_host"]))
    except Exception as exc:  # noqa: BLE001
        pytest.fail("the minicloud in %s does not answer at %s (%s); %s"
                    % (STATE_DIR, info.get("auth_url"), exc, HINT),
                    pytrace=False)
    if not services or services[0].state != "up":
        pytest.fail("nova-compute on %s is not up in the minicloud (%s); "
                    "see %s/nova-compute.log; %s"
                    % (info["compute_host"],
                       [(s.host, s.state) for s in services],
                       info["log_dir"], HINT), pytrace=False)
    yield Minicloud(info=info, conn=conn)
    conn.close()


@pytest.fixture(scope="session")
def minicloud_volumes(minicloud):
    """The minicloud's Cinder (RBD on its own Ceph), once cinder-volume is
    up: minicloud.json's "cinder" (volume type, volume host, image name
    template) and "ceph" (conf, pool, client.cinder's keyring, the libvirt
    secret) entries.  A cloud without them fails the tests (never skips)."""
    info = minicloud.info
    missing = [key for key in ("cinder", "ceph") if key not in info]
    if missing:
        pytest.fail("the minicloud in %s has no %s in minicloud.json (started "
                    "without Cinder and Ceph?); run tools/minicloud/"
                    "minicloud.sh install, down, then up"
                    % (STATE_DIR, " and ".join(missing)), pytrace=False)
    host = info["cinder"]["volume_host"]
    try:
        services = [s for s in minicloud.conn.block_storage.services(
            binary="cinder-volume") if s.host == host]
    except Exception as exc:  # noqa: BLE001
        pytest.fail("the minicloud's Cinder does not answer (%s); %s"
                    % (exc, HINT), pytrace=False)
    if not services or services[0].state != "up":
        pytest.fail("cinder-volume %s is not up in the minicloud (%s); see "
                    "%s/cinder-volume.log; %s"
                    % (host, [(s.host, s.state) for s in services],
                       info["log_dir"], HINT), pytrace=False)
    return info


# -- the chain every end-to-end module runs (one per module) ---------------
#
# A CloudStack API stand-in whose VMs are running transient KVM domains on
# CloudStack's NFS layout; cs2os-agent on the minicloud's compute node and
# cs2os-conductor as their own processes, on the session's exchange.

RUN_ID = ft.RUN_ID


@pytest.fixture(scope="module")
def cloud(cloudstack_root, minicloud):  # noqa: F811
    with stand_in_cloudstack(cloudstack_kvm.LibvirtKVM(
            cloudstack_root, ft.LIBVIRT_URI, stop_grace=1.0)) as api:
        yield api


@contextlib.contextmanager
def stand_in_cloudstack(kvm):
    """The CloudStack API stand-in, serving, whose VMs run on ``kvm`` (a
    LibvirtKVM): an admin account, a zone with one KVM host at
    127.0.0.1, a service offering like m1.tiny."""
    api = cloudstack_api.FakeCloudStack(kvm)
    try:
        api.admin = api.add_account("admin")
        api.kvm_host = api.add_host(api.add_zone("zone-%s" % RUN_ID),
                                    "kvm-%s" % RUN_ID, "127.0.0.1")
        # 64 MiB like m1.tiny: the conductor must pick that flavor itself.
        api.offering = api.add_service_offering(
            "tiny-%s" % RUN_ID, cpunumber=1, memory=64)
        api.endpoint = api.serve()
        yield api
    finally:
        api.shutdown()


@pytest.fixture(scope="module")
def agent(workdir, services, agent_api, minicloud,  # noqa: F811
          cloudstack_root):  # noqa: F811
    # The rbd transport reads the minicloud's Ceph (CloudStack RBD
    # primary storage in test_data_disks.py) as Cinder's user.
    ceph = minicloud.info.get("ceph") or {}
    rbd = {"rbd_user": ceph["user"], "rbd_keyring": ceph["keyring"]} \
        if ceph else {}
    proc = agent_process.AgentProcess(
        workdir, minicloud.compute_host, ft.TRANSPORT_URL,
        services["exchange"], minicloud.instances_path,
        [os.path.join(cloudstack_root, "mnt")],
        max_bandwidth_mbps=160,  # 20 MB/s: a cancel can land mid-copy
        transfer_options=rbd)
    proc.start(agent_api, cs2os_context.get_admin_context())
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def conductor_api(services):  # noqa: F811
    # Not the session's 3 s (agent calls are kept alive by the call
    # monitor; conductor calls are not): a dry run does its preflight
    # against Nova, Cinder and CloudStack inside the call, and a loaded
    # 2-vCPU machine has taken more than 3 s for it.
    return conductor_rpcapi.ConductorAPI(timeout=30)


@pytest.fixture(scope="module")
def conductor(request, workdir, services, cloud, minicloud, agent,
              conductor_api, cloudstack_root):
    proc = module_conductor(request, workdir, services, cloud, minicloud,
                            conductor_api, cloudstack_root)
    yield proc
    proc.stop()
    delete_migrated_servers(minicloud)


def module_conductor(request, workdir, services, cloud, minicloud,
                     conductor_api, cloudstack_root, conductor=None,
                     **cloudstack):
    """Start the calling module's own conductor, on its own database (a
    module's conductor must not find, and adopt, another module's
    migrations); ``cloudstack``: [cloudstack] options over
    conductor_sections' (project_map, flavor_map...); ``conductor``:
    [conductor] options (max_per_kvm_host...)."""
    name = "%s-%s" % (RUN_ID, request.module.__name__.rsplit(".", 1)[-1])
    spool = os.path.join(workdir, "spool-" + name)
    os.makedirs(spool, exist_ok=True)
    sections = conductor_sections(cloud, minicloud, cloudstack_root, spool)
    sections["cloudstack"].update(cloudstack)
    sections["conductor"].update(conductor or {})
    proc = conductor_process.ConductorProcess(
        workdir, "cs2os-e2e-%s-conductor" % name, ft.TRANSPORT_URL,
        services["exchange"],
        "sqlite:///%s" % os.path.join(workdir, "e2e-%s.sqlite" % name),
        "notifications-e2e-%s" % name, sections=sections)
    proc.manage("db", "sync")
    proc.start()
    return proc


def keystone_api(workdir, services, minicloud, name):
    """cs2os-api (started) whose auth_token checks the minicloud's
    Keystone tokens."""
    auth = admin_auth(minicloud)
    keystone = {k: auth[k] for k in (
        "auth_type", "auth_url", "username", "password", "project_name",
        "user_domain_name", "project_domain_name")}
    proc = api_process.ApiProcess(
        workdir, name, ft.TRANSPORT_URL, services["exchange"],
        auth_strategy="keystone",
        sections={"keystone_authtoken": dict(
            keystone, www_authenticate_uri=auth["auth_url"])})
    proc.start()
    return proc


@contextlib.contextmanager
def target_project(minicloud, name):
    """A Keystone project migrations land in, where cs2os's user (the
    minicloud's admin) has the admin role, as the README tells operators;
    afterwards its servers, ports and security groups go with it."""
    conn = minicloud.conn
    idc = conn.identity
    project = idc.create_project(name=name, domain_id="default")
    admin_role = next(r for r in idc.roles() if r.name == "admin")
    cs2os_user = idc.find_user(admin_auth(minicloud)["username"],
                               domain_id="default")
    idc.assign_project_role_to_user(project, cs2os_user, admin_role)
    try:
        yield project
    finally:
        servers = list(conn.compute.servers(all_projects=True,
                                            project_id=project.id))
        for server in servers:
            conn.compute.delete_server(server)
        for server in servers:
            conn.compute.wait_for_delete(server, wait=120)
        for port in conn.network.ports(project_id=project.id):
            conn.network.delete_port(port)
        for group in conn.network.security_groups(project_id=project.id):
            conn.network.delete_security_group(group)
        idc.delete_project(project)


def refuse_to_stop(monkeypatch, vm):
    """The stand-in's stopVirtualMachine fails for ``vm`` (and only it),
    as CloudStack answers when the hypervisor is busy: a migration fails
    after its ports and server exist, and rolls back."""
    power_off = cloudstack_handlers.power_off

    def refuse(c, v, forced):
        if v is vm:
            raise cloudstack_handlers.ApiError(
                530, "Failed to stop VM instance %s: hypervisor busy" % v.id)
        power_off(c, v, forced)

    monkeypatch.setattr(cloudstack_handlers, "power_off", refuse)


@contextlib.contextmanager
def shared_network(minicloud, name, cidr):
    """A shared Neutron network of the admin's, on which other projects'
    ports may live; deleted with its ports afterwards."""
    conn = minicloud.conn
    net = conn.network.create_network(name=name, shared=True)
    conn.network.create_subnet(network_id=net.id, ip_version=4,
                               enable_dhcp=False, cidr=cidr, name=name)
    try:
        yield net
    finally:
        for port in conn.network.ports(network_id=net.id):
            conn.network.delete_port(port)
        conn.network.delete_network(net)


# -- the warm chain's KVM host side (sshd the agent's tunnel logs in to) ------


@pytest.fixture(scope="module")
def kvm_sshd(workdir):
    try:
        server = warm_chain.start_kvm_sshd(workdir)
    except Exception as exc:  # noqa: BLE001 - harness error says why
        pytest.fail("the KVM host's sshd did not start: %s" % exc,
                    pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def remote_dir():
    path = warm_chain.make_remote_dir(RUN_ID)
    yield path
    warm_chain.remove_dir(path)


def conductor_sections(cloud, minicloud, cloudstack_root, spool,
                       account=None):
    """A chain conductor's config: the stand-in as ``account`` (default
    its admin), the minicloud's admin (every CloudStack owner mapped to its
    project), the path transport on the stand-in's primary storage."""
    account = account or cloud.admin
    mnt = os.path.join(cloudstack_root, "mnt")
    auth = admin_auth(minicloud)
    return {
        "cloudstack": {"endpoint": cloud.endpoint,
                       "api_key": account.apikey,
                       "secret_key": account.secretkey,
                       # As the warm chain (warm_chain.py): a
                       # CloudStack job (stop, start) is seen done within
                       # 0.2 s, not up to 0.5 s later, several times per
                       # migration.
                       "job_poll_interval": 0.2,
                       # Every owner into the admin's own project, where
                       # these modules look for the servers
                       # (test_ownership.py maps owners to customers').
                       "project_map": "*:%s" % auth["project_name"]},
        "openstack": auth,
        "conductor": {"overlay_transport": "path",
                      "primary_storage_mount": mnt,
                      "image_spool_dir": spool},
        "agent": {"allowed_source_roots": mnt},
    }


def delete_migrated_servers(minicloud):
    """The servers this run's migrations made: the minicloud has room for
    32 small servers (2 vCPUs at allocation ratio 16), shared by every
    run on the machine, and every module migrates a few."""
    conn = minicloud.conn
    ours = [s for s in conn.compute.servers(all_projects=True)
            if s.name.startswith("e2e-%s-" % RUN_ID)
            and "cs2os_migration_id" in (s.metadata or {})]
    for server in ours:
        conn.compute.delete_server(server)
    for server in ours:
        conn.compute.wait_for_delete(server, wait=120)


@pytest.fixture
def ctxt():
    return cs2os_context.RequestContext(user_id="e2e", project_id="admin")


def new_vm(cloud, cloudstack_root, nics=None, **volume_args):
    """A running CloudStack VM; ``nics``: [(network, ip, mac)]."""
    volume = images.make_cloudstack_volume(cloudstack_root, **volume_args)
    vm = cloud.add_kvm_vm("e2e-%s-%s" % (RUN_ID, uuid.uuid4().hex[:6]),
                          volume, cloud.admin, cloud.kvm_host,
                          offering=cloud.offering, nics=nics)
    vm.volume = volume
    wait_console(cloud.kvm.console(vm.instancename), volume.message)
    return vm
