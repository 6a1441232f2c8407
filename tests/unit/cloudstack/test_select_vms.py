"""CloudStackClient.select_vms: a plan's selector against the stand-in
(in process): account and domain, project, zone, tag, KVM host, pool."""

import uuid

import pytest

from tests.unit.cloudstack.test_client import Cloud


@pytest.fixture
def cloud():
    made = Cloud()
    yield made
    made.api.shutdown()


def _names(vms):
    return [vm["name"] for vm in vms]


def test_every_key_given_must_match(cloud):
    api = cloud.api
    sales = api.add_domain("sales")
    shop = api.add_account("shop", admin=False, domain=sales)
    other_pool = api.add_storage_pool(cloud.zone, "nfs-2", pool_id=None)
    project = api.add_project("erp")
    web = api.add_vm("web-1", shop, cloud.host, cloud.template,
                     cloud.offering, cloud.pool, str(uuid.uuid4()), 1 << 26,
                     [cloud.network], tags={"wave": "1"})
    cloud.kvm.running.add(web.instancename)
    api.add_vm("web-2", shop, cloud.host, cloud.template, cloud.offering,
               other_pool, str(uuid.uuid4()), 1 << 26, [cloud.network])
    api.add_vm("erp-db", cloud.user, cloud.host, cloud.template,
               cloud.offering, cloud.pool, str(uuid.uuid4()), 1 << 26,
               [cloud.network], project=project, tags={"wave": "1"})
    cloud.vm("alice-1")
    client = cloud.client()
    assert _names(client.select_vms({"account": "shop",
                                     "domain": "sales"})) == [
        "web-1", "web-2"]
    assert _names(client.select_vms({"domain": sales.id})) == [
        "web-1", "web-2"]
    assert _names(client.select_vms({"account": "shop",
                                     "domain": "ROOT"})) == []
    # A CloudStack project's VMs too (listed with projectid=-1).
    assert _names(client.select_vms({"tag": "wave=1"})) == [
        "erp-db", "web-1"]
    assert _names(client.select_vms({"project": "erp"})) == ["erp-db"]
    assert _names(client.select_vms({"zone": "zone-1"})) == [
        "alice-1", "erp-db", "web-1", "web-2"]
    # The KVM host: CloudStack names it for running VMs only.
    assert _names(client.select_vms({"host": "kvm-1"})) == ["web-1"]
    assert _names(client.select_vms({"pool": "nfs-2"})) == ["web-2"]
    assert _names(client.select_vms({"pool": cloud.pool.id,
                                     "tag": "wave=1"})) == [
        "erp-db", "web-1"]
    assert client.select_vms({"tag": "wave=2"}) == []
