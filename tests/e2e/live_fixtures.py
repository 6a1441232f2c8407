"""The live mode's chain (issue 20): conftest's, with the stand-in
CloudStack's KVM host on a second libvirtd (tools/testbed/live_kvm).

A live migration's hop is a real cross-host live migration: the
CloudStack VM (A) runs on the second libvirtd, the minicloud's Nova on the
machine's main libvirtd.  A test module imports the fixtures it overrides:

    agent = live_fixtures.agent  # (and cloud, conductor, kvm_host)

- ``kvm_host``: the second libvirtd (live_kvm.start_kvm_host), the
  stand-in's primary storage at its /mnt;
- ``cloud``: conftest's stand-in, its LibvirtKVM on that libvirtd.  The
  host's address as CloudStack reports it stays 127.0.0.1; nothing
  listens there for libvirt, so the ``kvm_libvirt_uri`` templates (the
  agent's and the conductor's) are the second libvirtd's unix socket URI
  with ``{host}`` in the socket's path (live_kvm.uri_template: a real
  deployment's is e.g. ``qemu+ssh://root@{host}/system?...``);
- ``agent``: conftest's, plus a [live] section: that template,
  ``migrate_address = 127.0.0.1`` and the module's LIVE_OPTIONS;
- ``conductor``: conftest's, with ``[cloudstack] kvm_libvirt_uri`` that
  template too (validate checks the running source there, as in warm mode).

:func:`new_live_vm` is a running stand-in VM booting the counter guest
(live_kvm.make_live_volume); ``Consoles`` (tools/testbed/live_consoles)
reads the guest's serial output wherever it goes (A's console file, the
files the agent gives the temporary domain and B), in the order written.
"""

import os
import uuid

import pytest

from cs2os_agent.common import context as cs2os_context
from tests.e2e.conftest import RUN_ID
from tests.e2e.conftest import delete_migrated_servers
from tests.e2e.conftest import module_conductor
from tests.e2e.conftest import stand_in_cloudstack
from tools.testbed import agent_process
from tools.testbed import harness as ft
from tools.testbed import live_consoles
from tools.testbed import live_guest
from tools.testbed import live_kvm

# Read here: the guest's serial output wherever the migration sends it.
Consoles = live_consoles.Consoles


@pytest.fixture(scope="module")
def kvm_host(cloudstack_root):
    daemon = live_kvm.start_kvm_host(RUN_ID + "-kvm", cloudstack_root)
    yield daemon
    live_kvm.stop_kvm_host(daemon)


@pytest.fixture(scope="module")
def cloud(cloudstack_root, minicloud, kvm_host):
    with stand_in_cloudstack(
            live_kvm.kvm_on(kvm_host, cloudstack_root)) as api:
        yield api


def live_section(kvm_host, **options):
    values = {"kvm_libvirt_uri": live_kvm.uri_template(kvm_host),
              "migrate_address": live_kvm.LOCAL}
    values.update(options)
    return "\n[live]\n" + "".join("%s = %s\n" % kv
                                  for kv in sorted(values.items()))


def write_agent_conf(proc, kvm_host, base_conf, **options):
    with open(proc.conf_file, "w") as f:
        f.write(base_conf + live_section(kvm_host, **options))


@pytest.fixture(scope="module")
def agent(request, workdir, services, agent_api, minicloud, cloudstack_root,
          kvm_host):
    proc = agent_process.AgentProcess(
        workdir, minicloud.compute_host, ft.TRANSPORT_URL,
        services["exchange"], minicloud.instances_path,
        [os.path.join(cloudstack_root, "mnt")])
    with open(proc.conf_file) as f:
        proc.base_conf = f.read()
    write_agent_conf(proc, kvm_host, proc.base_conf,
                     **getattr(request.module, "LIVE_OPTIONS", {}))
    proc.start(agent_api, cs2os_context.get_admin_context())
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def conductor(request, workdir, services, cloud, minicloud, agent,
              conductor_api, cloudstack_root, kvm_host):
    """conftest's, reaching the KVM host's libvirtd too: live mode's
    validate checks the running source there as warm mode's does
    ([cloudstack] kvm_libvirt_uri, the same URI as the agent's)."""
    proc = module_conductor(request, workdir, services, cloud, minicloud,
                            conductor_api, cloudstack_root,
                            kvm_libvirt_uri=live_kvm.uri_template(kvm_host))
    yield proc
    proc.stop()
    delete_migrated_servers(minicloud)


def restart_agent(proc, agent_api, kvm_host, **options):
    """The module's agent again, its [live] section with ``options``."""
    proc.stop()
    write_agent_conf(proc, kvm_host, proc.base_conf, **options)
    proc.start(agent_api, cs2os_context.get_admin_context())


def new_live_vm(cloud, cloudstack_root, **volume_args):
    """A running stand-in VM printing its counter (20 seen already)."""
    volume = live_kvm.make_live_volume(cloudstack_root, **volume_args)
    vm = cloud.add_kvm_vm("e2e-%s-%s" % (RUN_ID, uuid.uuid4().hex[:6]),
                          volume, cloud.admin, cloud.kvm_host,
                          offering=cloud.offering)
    vm.volume = volume
    vm.console = cloud.kvm.console(vm.instancename)
    watch = live_guest.SerialWatch(vm.console)
    watch.start()
    try:
        watch.wait_counter(vm.console, 20)
    finally:
        watch.stop()
    return vm
