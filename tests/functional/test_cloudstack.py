"""The CloudStack client over HTTP against the stand-in with real VMs.

The stand-in (tools/testbed/cloudstack_api.py) listens on 127.0.0.1 and
checks every signature; its VMs are transient libvirt KVM domains named as
CloudStack names them, running on a template + overlay laid out as on NFS
primary storage (<root>/mnt/<pool uuid>/).  Each guest prints a line from
its overlay to its serial console, which proves which disk it booted from.
"""

import os

import libvirt
import pytest

from cs2os_agent import qemu_img
from cs2os_agent.cloudstack import client as cs_client
from cs2os_agent.cloudstack import discovery
from cs2os_agent.cloudstack import errors as cloudstack_errors
from tests.functional import checks
from tools.testbed import cloudstack_api
from tools.testbed import cloudstack_kvm
from tools.testbed import harness
from tools.testbed import images
from tools.testbed import process

RUN_ID = harness.RUN_ID


@pytest.fixture(scope="module")
def cloud(cloudstack_root):
    checks.require_binaries()
    checks.require_libvirt()
    kvm = cloudstack_kvm.LibvirtKVM(cloudstack_root, harness.LIBVIRT_URI,
                                    stop_grace=1.0)
    api = cloudstack_api.FakeCloudStack(kvm)
    api.admin = api.add_account("admin")
    api.host = api.add_host(api.add_zone("zone-%s" % RUN_ID),
                            "kvm-%s" % RUN_ID, "127.0.0.1")
    api.network = api.add_network(api.host.zone, "guest-%s" % RUN_ID)
    api.endpoint = api.serve()
    yield api
    api.shutdown()


@pytest.fixture(scope="module")
def libvirt_conn(cloud):
    conn = libvirt.open(harness.LIBVIRT_URI)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def client(cloud):
    return cs_client.CloudStackClient(
        cloud.endpoint, cloud.admin.apikey, cloud.admin.secretkey,
        timeout=10, job_poll_interval=0.1, job_timeout=120)


def domain(conn, name):
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError:
        return None


@pytest.fixture(scope="module")
def running_vm(cloud, cloudstack_root):
    volume = images.make_cloudstack_volume(cloudstack_root)
    vm = cloud.add_kvm_vm("web-%s" % RUN_ID, volume, cloud.admin, cloud.host,
                          networks=[cloud.network])
    harness.wait_console(cloud.kvm.console(vm.instancename), volume.message)
    vm.volume = volume
    return vm


def test_find_by_id_and_by_name(client, running_vm):
    by_id = client.find_vm(running_vm.id)
    assert by_id["name"] == running_vm.name
    assert by_id["state"] == "Running"
    assert client.find_vm(running_vm.name)["id"] == running_vm.id


def test_describe_vm_matches_the_files_and_the_domain(
        client, cloud, running_vm, libvirt_conn, cloudstack_root):
    desc = discovery.describe_vm(client, running_vm.name)
    volume = running_vm.volume
    pool_id = os.path.basename(volume.pool_dir)
    assert discovery.validate_vm(desc) == []
    assert desc["hypervisor"] == "KVM" and desc["state"] == "Running"
    assert desc["instancename"] == running_vm.instancename
    dom = domain(libvirt_conn, desc["instancename"])
    assert dom is not None and dom.isActive()
    assert dom.UUIDString() == desc["id"]
    assert not dom.isPersistent()  # transient, as CloudStack makes them
    assert desc["host"] == {"id": cloud.host.id, "name": cloud.host.name,
                            "ipaddress": "127.0.0.1"}
    assert desc["root_volume"]["storage"]["id"] == pool_id
    assert desc["root_volume"]["storage"]["type"] == "NetworkFilesystem"
    assert desc["root_volume"]["path"] == os.path.basename(volume.overlay)
    assert desc["overlay_path"] == "/mnt/%s/%s" % (
        pool_id, os.path.basename(volume.overlay))
    assert desc["template"]["id"] == os.path.basename(volume.template)
    assert desc["nics"][0]["networkid"] == cloud.network.id
    # The path CloudStack reports is the file the guest runs on; its
    # header names the template the way a CloudStack KVM host does.
    local = os.path.join(cloudstack_root, desc["overlay_path"].lstrip("/"))
    assert os.path.isfile(local) and local == volume.overlay
    info = qemu_img.info(local, "qcow2", force_share=True)
    assert info["backing-filename"] == volume.header_backing
    assert info["backing-filename"] == "/mnt/%s/%s" % (
        pool_id, desc["template"]["id"])
    assert not os.path.exists(info["backing-filename"])


def test_stop_then_start(client, cloud, running_vm, libvirt_conn):
    stopped = client.stop_vm(running_vm.id)
    assert stopped["state"] == "Stopped"
    assert "hostid" not in stopped
    # A stopped transient domain is gone; the volume files stay.
    assert domain(libvirt_conn, running_vm.instancename) is None
    assert os.path.isfile(running_vm.volume.overlay)
    assert client.find_vm(running_vm.id)["state"] == "Stopped"
    assert discovery.describe_vm(client, running_vm.id)["host"]["id"] is None
    started = client.start_vm(running_vm.id)
    assert started["state"] == "Running"
    dom = domain(libvirt_conn, running_vm.instancename)
    assert dom is not None and dom.isActive()
    harness.wait_console(cloud.kvm.console(running_vm.instancename),
                         running_vm.volume.message)


def test_wrong_secret_is_auth_failed(cloud, running_vm):
    wrong = cs_client.CloudStackClient(cloud.endpoint, cloud.admin.apikey,
                                       "not-the-secret", timeout=10)
    with pytest.raises(cloudstack_errors.CloudStackAuthFailed) as info:
        wrong.find_vm(running_vm.id)
    assert info.value.kwargs["errorcode"] == 401


def test_unknown_vm_is_not_found(client):
    with pytest.raises(cloudstack_errors.CloudStackVMNotFound):
        client.find_vm("nothing-%s" % RUN_ID)
    with pytest.raises(cloudstack_errors.CloudStackVMNotFound):
        client.find_vm("00000000-0000-4000-8000-%s0000" % RUN_ID)


def test_unreachable_endpoint():
    # A port that was free a moment ago: nothing listens there.
    port = process.free_port()
    unreachable = cs_client.CloudStackClient(
        "http://127.0.0.1:%d/client/api" % port, "k", "s", timeout=5)
    with pytest.raises(cloudstack_errors.CloudStackUnreachable) as info:
        unreachable.find_vm("web-1")
    assert str(port) in str(info.value)


def test_failing_start_job(client, cloud, cloudstack_root, libvirt_conn):
    volume = images.make_cloudstack_volume(cloudstack_root)
    vm = cloud.add_kvm_vm("broken-%s" % RUN_ID, volume, cloud.admin,
                          cloud.host, start=False)
    os.unlink(volume.overlay)  # the volume file is gone from the pool
    with pytest.raises(cloudstack_errors.CloudStackJobFailed) as info:
        client.start_vm(vm.id)
    assert info.value.kwargs["errorcode"] == 530
    assert os.path.basename(volume.overlay) in str(info.value)
    assert client.find_vm(vm.id)["state"] == "Stopped"
    assert domain(libvirt_conn, vm.instancename) is None


def test_destroy_with_expunge(client, cloud, cloudstack_root, libvirt_conn):
    volume = images.make_cloudstack_volume(cloudstack_root)
    vm = cloud.add_kvm_vm("gone-%s" % RUN_ID, volume, cloud.admin,
                          cloud.host)
    assert domain(libvirt_conn, vm.instancename) is not None
    client.destroy_vm(vm.id, expunge=True)
    assert domain(libvirt_conn, vm.instancename) is None
    assert not os.path.exists(volume.overlay)  # CloudStack deletes it
    assert os.path.exists(volume.template)
    with pytest.raises(cloudstack_errors.CloudStackVMNotFound):
        client.find_vm(vm.id)


def test_ha_turned_off_and_on_again(client, cloud, running_vm):
    # updateVirtualMachine haenable= (a live migration's hop): the VM's
    # entry says it, over signed HTTP, and the guest runs on.
    assert client.find_vm(running_vm.id)["haenable"] is False
    assert client.set_vm_ha(running_vm.id, True)["haenable"] is True
    assert client.find_vm(running_vm.id)["haenable"] is True
    entry = client.set_vm_ha(running_vm.id, False)
    assert (entry["id"], entry["haenable"]) == (running_vm.id, False)
    assert client.find_vm(running_vm.id)["haenable"] is False
    assert client.find_vm(running_vm.id)["state"] == "Running"
    with pytest.raises(cloudstack_errors.CloudStackError) as info:
        client.set_vm_ha("00000000-0000-4000-8000-%s0000" % RUN_ID, False)
    assert "431" in str(info.value) or "invalid" in str(info.value).lower()
