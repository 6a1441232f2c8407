"""The live chain of the fault suite, and what a finished live migration
must show (test_live_crash_points.py).

The chain is the live e2e tests' (tests/e2e/live_fixtures.py: the
CloudStack KVM host on a second libvirtd, the counter guest), with an
agent and a conductor the sweep can kill and start again (chaos.relaunch:
``probe``, ``db_path``), the agent's [live] run_dir in the run's work
directory (its state files and move sockets are checked after each case).
A failed move (fault "failed-move") is made as the e2e test makes it: the
agent restarted with its run_dir under a directory only root may walk
through, so the temporary domain's QEMU cannot reach the move's socket.
"""

import os

import libvirt
import pytest

from cs2os_agent import virt
from cs2os_agent.common import context as cs2os_context
from tests.e2e.conftest import RUN_ID
from tests.e2e.conftest import delete_migrated_servers
from tests.e2e.conftest import module_conductor
from tests.e2e.live_fixtures import write_agent_conf
from tests.faults import chaos
from tests.faults import invariants
from tools.testbed import agent_process
from tools.testbed import harness as ft
from tools.testbed import live_kvm

require = invariants.require


@pytest.fixture(scope="module")
def agent(workdir, services, agent_api, minicloud, cloudstack_root,
          kvm_host):
    proc = agent_process.AgentProcess(
        workdir, minicloud.compute_host, ft.TRANSPORT_URL,
        services["exchange"], minicloud.instances_path,
        [os.path.join(cloudstack_root, "mnt")])
    with open(proc.conf_file) as f:
        proc.base_conf = f.read()
    proc.kvm_host = kvm_host
    proc.plain_run_dir = os.path.join(workdir, "faults-live-run")
    # 0700: libvirt's QEMU user cannot reach a socket below it.
    private = os.path.join(workdir, "faults-live-private")
    os.makedirs(private, mode=0o700, exist_ok=True)
    proc.private_run_dir = os.path.join(private, "run")
    proc.run_dir = None
    proc.probe = lambda: agent_api.get_agent_info(
        cs2os_context.get_admin_context(), proc.host, timeout=2)
    use_run_dir(proc, proc.plain_run_dir)
    yield proc
    proc.stop()


def use_run_dir(agent, run_dir):
    """The agent running plain with [live] run_dir ``run_dir``
    (restarted only if it is not so already)."""
    if agent.run_dir != run_dir:
        write_agent_conf(agent, agent.kvm_host, agent.base_conf,
                         run_dir=run_dir)
        agent.run_dir = run_dir
        chaos.relaunch(agent)
    chaos.ensure_plain(agent)


@pytest.fixture(scope="module")
def conductor(request, workdir, services, cloud, minicloud, agent,
              conductor_api, cloudstack_root, kvm_host):
    proc = module_conductor(request, workdir, services, cloud, minicloud,
                            conductor_api, cloudstack_root,
                            kvm_libvirt_uri=live_kvm.uri_template(kvm_host))
    proc.db_path = os.path.join(workdir, "e2e-%s-%s.sqlite" % (
        RUN_ID, request.module.__name__.rsplit(".", 1)[-1]))
    assert os.path.exists(proc.db_path), proc.db_path
    yield proc
    proc.stop()
    delete_migrated_servers(minicloud)


def _domains(conn, dom_uuid):
    return [d.name() for d in conn.listAllDomains(0)
            if d.UUIDString() == dom_uuid]


def _exists(conn, name):
    try:
        conn.lookupByName(name)
        return True
    except libvirt.libvirtError:
        return False


def run_dir_left(run_dir, migration_id):
    """What the agent's run_dir still holds of a finished migration: the
    move's subdirectories (FIFO, socket) and its state file."""
    from cs2os_agent.agent.live import state

    if not os.path.isdir(run_dir):
        return [], None
    dirs = [n for n in os.listdir(run_dir)
            if os.path.isdir(os.path.join(run_dir, n))]
    record = state.load(run_dir, migration_id)
    return dirs, (state.path(run_dir, migration_id) if record else None)


def _common(record, temp_name, vm, kvm_host, main):
    mid = record["id"]
    require(record.get("active_source") is None, 5,
            "final migration %s still holds active_source %s"
            % (mid, record.get("active_source")))
    require(not _exists(main, temp_name), 1, "the temporary domain %s is "
            "left on the Nova host after migration %s ended %s"
            % (temp_name, mid, record["state"]))
    return _domains(kvm_host.conn, vm.id)


def check_succeeded(record, cloud, minicloud, vm, kvm_host, temp_name,
                    a_last, workdir):
    """A live migration that succeeded: the guest in Nova's domain only,
    on a disk that holds what it wrote in A; CloudStack's VM retired."""
    mid, res = record["id"], record["resources"]
    require(record["committed"] or res.get("committed"), 2,
            "migration %s succeeded without a commit" % mid)
    require(not record["result"].get("rolled_back"), 2, "committed "
            "migration %s rolled back %s" % (mid, record["result"]))
    require(not any(e["message"].startswith("started CloudStack VM")
                    for e in record["events"]), 1, "migration %s started "
            "the CloudStack VM after its commit" % mid)
    invariants._overlay_intact(vm, None, workdir)
    main = libvirt.open(ft.LIBVIRT_URI)
    try:
        on_kvm = _common(record, temp_name, vm, kvm_host, main)
        require(not on_kvm, 1, "CloudStack's domain %s is still on the KVM "
                "host after the move" % on_kvm)
        server_id = res["server_id"]
        server = minicloud.conn.compute.get_server(server_id)
        require(server.status == "ACTIVE", 2, "server %s is %s after "
                "success" % (server_id, server.status))
        b = main.lookupByUUIDString(server_id)
        require(virt.state(b) == virt.RUNNING, 1, "Nova's domain %s is %s "
                "after success" % (b.name(), virt.state(b)))
        require(b.name() == server.instance_name, 1, "server %s runs in %s"
                ", not Nova's %s" % (server_id, b.name(),
                                     server.instance_name))
        require(_domains(main, vm.id) == [], 1, "a domain with the "
                "CloudStack VM's UUID is left on the Nova host: %s"
                % _domains(main, vm.id))
    finally:
        main.close()
    state_cs = cloud.vm_state(vm)
    require(state_cs in ("Unmanaged", "Expunging"), 1, "CloudStack VM %s "
            "is %s after the move, not retired" % (vm.name, state_cs))
    require(vm.haenable is False, 1, "CloudStack HA of %s is on again "
            "after the commit" % vm.name)
    disk = os.path.join(minicloud.instances_path, server_id, "disk")
    on_disk = live_kvm.disk_counter(disk)
    require(on_disk is not None and on_disk > a_last, 2, "Nova's disk %s "
            "holds counter %s, not past A's last %s: the guest's disk "
            "did not move" % (disk, on_disk, a_last))
    return "server %s ACTIVE, its domain runs the guest" % server_id


def check_rolled_back(record, cloud, minicloud, vm, kvm_host, temp_name,
                      server_ids):
    """A live migration rolled back: the guest on its KVM host again in
    A, under its name, CloudStack's VM Running with HA as it was, and
    nothing of the migration in Nova."""
    mid, result = record["id"], record["result"]
    require(not (record["committed"]
                 or record["resources"].get("committed")), 2,
            "migration %s ended %s committed" % (mid, record["state"]))
    require(record["state"] != "succeeded", 2, "migration %s succeeded "
            "without a commit" % mid)
    require(result.get("rollback_of", {}).get("state") == record["state"],
            4, "migration %s ended %s, its rollback was for %s"
            % (mid, record["state"], result.get("rollback_of")))
    forward = invariants._events_after_rollback_began(record)
    require(not forward, 4, "migration %s went on forward after its "
            "rollback began: %s" % (mid, forward))
    main = libvirt.open(ft.LIBVIRT_URI)
    try:
        on_kvm = _common(record, temp_name, vm, kvm_host, main)
        require(on_kvm == [vm.instancename], 1, "the KVM host holds %s, "
                "not A (%s)" % (on_kvm, vm.instancename))
        a = kvm_host.conn.lookupByName(vm.instancename)
        require(virt.state(a) == virt.RUNNING, 1, "A is %s after the "
                "rollback: the guest runs nowhere" % virt.state(a))
        require(_domains(main, vm.id) == [], 1, "a domain with the "
                "CloudStack VM's UUID is left on the Nova host: %s"
                % _domains(main, vm.id))
    finally:
        main.close()
    require(cloud.vm_state(vm) == "Running", 1, "CloudStack VM %s is %s "
            "after the rollback" % (vm.name, cloud.vm_state(vm)))
    require(vm.haenable is True, 1, "CloudStack HA of %s was not turned on"
            " again by the rollback" % vm.name)
    try:
        ft.wait_for(lambda: invariants.ours_in_nova(minicloud, mid)
                    == ([], []), 120, "Nova and Neutron to drop the "
                    "migration's server and ports")
    except AssertionError:
        raise invariants.broken(2, "rolled-back migration %s left %s in "
                                "Nova/Neutron" % (
                                    mid, invariants.ours_in_nova(
                                        minicloud, mid))) from None
    left = [s for s in server_ids if os.path.exists(
        os.path.join(minicloud.instances_path, s))]
    require(not left, 2, "instance directories left: %s" % left)
    return "rolled back: %s" % "; ".join(result.get("rolled_back") or [])
