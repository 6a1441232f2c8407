"""The operator's path: `openstack cs2os ...` -> Keystone catalog ->
cs2os-api (Keystone tokens checked by auth_token) -> cs2os-conductor.

Everything here is real: the openstack command in its own process, the
minicloud's Keystone issuing and validating tokens, its catalog pointing
at a cs2os-api process, the conductor and agent behind it, and Nova.
The catalog entry lives in a region of its own, so it never meets another
run's (or the sandbox's) cs2os endpoint.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml

from cs2os_agent import qemu_img
from tests.e2e.conftest import RUN_ID
from tests.e2e.conftest import keystone_api
from tests.e2e.conftest import new_vm

OPENSTACK = os.path.join(os.path.dirname(sys.executable), "openstack")


@pytest.fixture(scope="module")
def region(minicloud, workdir):
    conn = minicloud.conn
    name = "cs2os-e2e-%s" % RUN_ID
    conn.identity.create_region(id=name)
    service = conn.identity.create_service(
        name="cs2os-e2e-%s" % RUN_ID, type="cs2os")
    # The users' clouds.yaml, in this region (openstacksdk only accepts
    # the regions a cloud lists).
    with open(minicloud.info["clouds_yaml"]) as f:
        clouds = yaml.safe_load(f)
    for cloud in clouds["clouds"].values():
        cloud["region_name"] = name
    clouds_yaml = os.path.join(workdir, "clouds-%s.yaml" % name)
    with open(os.open(clouds_yaml, os.O_WRONLY | os.O_CREAT, 0o600),
              "w") as f:
        yaml.safe_dump(clouds, f)
    yield {"name": name, "service": service, "clouds_yaml": clouds_yaml}
    for endpoint in conn.identity.endpoints(service_id=service.id):
        conn.identity.delete_endpoint(endpoint)
    conn.identity.delete_service(service)
    conn.identity.delete_region(name)


@pytest.fixture(scope="module")
def api(workdir, services, minicloud, conductor, region):
    proc = keystone_api(workdir, services, minicloud,
                        "cs2os-api-e2e-%s" % RUN_ID)
    minicloud.conn.identity.create_endpoint(
        service_id=region["service"].id, url=proc.url, interface="public",
        region_id=region["name"])
    yield proc
    proc.stop()


def openstack(minicloud, region, *args, cloud=None):
    """The real openstack command as a user of the minicloud."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = region["clouds_yaml"]
    return subprocess.run(
        [OPENSTACK, "--os-cloud", cloud or minicloud.info["admin_cloud"],
         *args],
        env=env, capture_output=True, text=True, timeout=600, check=False)


def test_import_with_wait_migrates_the_vm(api, region, cloud, minicloud,
                                          cloudstack_root):
    vm = new_vm(cloud, cloudstack_root)
    done = openstack(minicloud, region, "cs2os", "import", vm.name,
                     "--host", minicloud.compute_host, "--wait",
                     "--poll-interval", "0.5", "-f", "json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["state"] == "succeeded"
    # Progress went to stderr while it ran (not a TTY: one line per change).
    assert "succeeded" in done.stderr
    # Each step with its place in the flow; the boot copies nothing, so
    # its lines show no bytes (not the template upload's 100% of before).
    lines = done.stderr.splitlines()
    boot = [line for line in lines if "running boot (step 4 of 12)" in line]
    assert boot, lines
    assert not [line for line in boot if " / " in line or "%" in line]
    server = minicloud.conn.compute.get_server(
        record["resources"]["server_id"])
    assert (server.status, server.compute_host) == \
        ("ACTIVE", minicloud.compute_host)
    disk = os.path.join(minicloud.instances_path, server.id, "disk")
    qemu_img.compare(vm.volume.reference, disk, "qcow2", "qcow2",
                     force_share=True)
    # The caller's Keystone identity travelled through the API and the
    # bus into the record.
    admin = minicloud.conn.identity.find_user("admin")
    assert record["user_id"] == admin.id

    listed = openstack(minicloud, region, "cs2os", "migration", "list",
                       "--source", vm.name, "-f", "json")
    assert listed.returncode == 0, listed.stderr
    assert [m["ID"] for m in json.loads(listed.stdout)] == [record["id"]]
    shown = openstack(minicloud, region, "cs2os", "migration", "show",
                      record["id"], "-f", "value", "-c", "state")
    assert shown.stdout.strip() == "succeeded"


def test_a_failing_import_exits_non_zero_with_the_error(api, region,
                                                        minicloud):
    name = "no-such-vm-%s" % RUN_ID
    done = openstack(minicloud, region, "cs2os", "import", name, "--wait",
                     "--poll-interval", "0.5")
    assert done.returncode != 0
    assert "CloudStack has no VM with id or name %s" % name in done.stderr
    retried = openstack(minicloud, region, "cs2os", "migration", "cancel",
                        _newest_id(minicloud, region, name))
    assert retried.returncode != 0
    assert "is failed: cannot cancel" in retried.stderr
    assert "(HTTP 409" in retried.stderr


def _newest_id(minicloud, region, source):
    listed = openstack(minicloud, region, "cs2os", "migration", "list",
                       "--source", source, "-f", "value", "-c", "ID")
    return listed.stdout.split()[0]


def test_a_member_sees_only_its_project_and_may_not_import(api, region,
                                                            minicloud):
    # minicloud-demo: project demo, role member.  The admin's migrations
    # of this module land in the admin's project: demo sees none of them.
    demo = minicloud.info["demo_cloud"]
    listed = openstack(minicloud, region, "cs2os", "migration", "list",
                       "-f", "json", cloud=demo)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    done = openstack(minicloud, region, "cs2os", "import", "web-1",
                     cloud=demo)
    assert done.returncode != 0
    assert "Policy does not allow cs2os:migration:create to be performed" \
        in done.stderr
    assert "(HTTP 403" in done.stderr


def test_a_bad_token_is_refused(api):
    import requests

    resp = requests.get(api.url + "/v1/migrations",
                        headers={"X-Auth-Token": "not-a-token"}, timeout=30)
    assert resp.status_code == 401
