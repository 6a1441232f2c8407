"""Preflight (``dry_run``): what a migration would do and what would stop
it, read from the real clouds, with nothing recorded or created in either.

The CloudStack stand-in logs every API call (so a call that changes
anything would show), the real Nova, Neutron and Glance are counted before
and after, and the conductor's records are listed before and after.
"""

import json
import os
import uuid

from cs2os_agent.openstack import client as os_client
from tests.e2e.conftest import RUN_ID
from tests.e2e.conftest import new_vm
from tests.e2e.conftest import target_project

# The cs2os-api behind the minicloud's catalog, and the real openstack
# command (fixtures, taken by name).
from tests.e2e.test_api_cli import api  # noqa: F401
from tests.e2e.test_api_cli import openstack
from tests.e2e.test_api_cli import region  # noqa: F401
from tools.testbed.harness import wait_state

# CloudStack calls that only read.
READS = ("list", "get", "query")


def _world(minicloud, conductor_api, ctxt, vm):
    """What a migration of ``vm`` would have made: servers of its name
    (anywhere), ports of its name, images of its template, records of it
    (other modules' servers may come and go meanwhile)."""
    conn = minicloud.conn
    macs = {nic.macaddress for nic in vm.nics}
    template_id = os.path.basename(vm.volume.template)
    return {
        "servers": sorted(s.id for s in conn.compute.servers(
            all_projects=True, name="^%s$" % vm.name)),
        "ports": sorted(p.id for p in conn.network.ports()
                        if p.mac_address in macs),
        "images": sorted(i.id for i in conn.image.images(**{
            os_client.TEMPLATE_KEY: template_id})),
        "migrations": sorted(m["id"] for m in conductor_api.list_migrations(
            ctxt, {"source": vm.name})),
    }


def _writes(cloud, since):
    return [command for _method, command, _params in cloud.calls[since:]
            if not command.startswith(READS)]


def _findings(report, severity="critical"):
    return {(f["check"], f["message"]) for f in report["findings"]
            if f["severity"] == severity}


def test_a_dry_run_reports_the_plan_and_changes_nothing(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    vm = new_vm(cloud, cloudstack_root)
    before = _world(minicloud, conductor_api, ctxt, vm)
    calls = len(cloud.calls)
    answer = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host,
               "dry_run": True})
    report = answer["preflight"]
    assert answer["dry_run"] is True
    assert report["ok"] is True, report["findings"]
    assert report["summary"].startswith("0 critical")
    plan = report["plan"]
    assert plan["vm"]["id"] == vm.id and plan["vm"]["state"] == "Running"
    assert plan["project"]["id"]
    assert plan["flavor"]["disk_gib"] >= 1
    # The template is not in Glance yet: its bytes are counted.
    assert plan["image"]["upload_bytes"] > 0
    estimate = plan["estimate"]
    assert estimate["bytes_to_move"] == (estimate["disk_bytes"]
                                         + estimate["template_bytes"])
    assert estimate["disk_bytes"] > 0 and estimate["copy_seconds"] > 0
    assert estimate["rate_basis"]
    # Nothing recorded, nothing created, nothing asked of CloudStack but
    # reads; the VM runs on.
    assert _world(minicloud, conductor_api, ctxt, vm) == before
    assert _writes(cloud, calls) == []
    assert cloud.vm_state(vm) == "Running"

    # The same VM migrated: a second dry run names the active migration
    # while it runs, and the image the first one uploaded once it is done.
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host})
    busy = conductor_api.create_migration(
        ctxt, {"source": vm.name, "dry_run": True})["preflight"]
    done = wait_state(conductor_api, ctxt, created["id"],
                      ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    # (the claim is recorded with the request, before any step ran)
    assert ("vm", "migration %s (%s) is already moving this VM"
            % (created["id"], created["state"])) in _findings(busy) or (
        "vm", "migration %s (running) is already moving this VM"
        % created["id"]) in _findings(busy)
    # A VM made from the same template: its image is the one uploaded.
    sibling = new_vm(cloud, cloudstack_root, same_template_as=vm.volume)
    again = conductor_api.create_migration(
        ctxt, {"source": sibling.name, "dry_run": True})["preflight"]
    assert again["ok"] is True, again["findings"]
    assert again["plan"]["image"] == {"reused": done["resources"]["image_id"]}
    assert again["plan"]["estimate"]["template_bytes"] == 0


def test_a_dry_run_names_what_would_stop_the_migration(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    vm = new_vm(cloud, cloudstack_root)
    report = conductor_api.create_migration(
        ctxt, {"source": vm.name, "flavor": "no-such-flavor-%s" % RUN_ID,
               "host": "no-such-host", "dry_run": True})["preflight"]
    assert report["ok"] is False
    critical = _findings(report)
    assert ("flavor", "flavor no-such-flavor-%s not found, named by the "
            "request" % RUN_ID) in critical
    assert ("host", "no-such-host is not a nova-compute host") in critical
    # Both found in one report: one run tells the operator everything.
    assert report["summary"].startswith("%d critical" % len(critical))

    missing = conductor_api.create_migration(
        ctxt, {"source": vm.name, "project": "no-such-project-%s" % RUN_ID,
               "dry_run": True})["preflight"]
    assert [f["check"] for f in missing["findings"]] == ["project"]
    assert "named by the request" in missing["findings"][0]["message"]

    gone = conductor_api.create_migration(
        ctxt, {"source": "no-such-vm-%s" % uuid.uuid4().hex[:6],
               "dry_run": True})["preflight"]
    assert gone["ok"] is False
    assert [f["check"] for f in gone["findings"]] == ["vm"]


def test_a_dry_run_finds_a_full_quota(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    vm = new_vm(cloud, cloudstack_root)
    with target_project(minicloud, "e2e-quota-%s" % RUN_ID) as project:
        minicloud.conn.set_compute_quotas(project.id, instances=0)
        report = conductor_api.create_migration(
            ctxt, {"source": vm.name, "project": project.id,
                   "host": minicloud.compute_host,
                   "dry_run": True})["preflight"]
    assert report["ok"] is False
    assert ("quota", "project %s has 0 of 0 instances in use; this server "
            "needs 1 more" % project.name) in _findings(report)


def test_openstack_cs2os_import_dry_run(api, region, conductor, cloud,  # noqa: F811
                                        minicloud, cloudstack_root,
                                        conductor_api, ctxt):
    vm = new_vm(cloud, cloudstack_root)
    before = _world(minicloud, conductor_api, ctxt, vm)
    shown = openstack(minicloud, region, "cs2os", "import", vm.name,
                      "--host", minicloud.compute_host, "--dry-run",
                      "-f", "json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["ok"] is True and report["findings"] == []
    assert report["vm"]["name"] == vm.name
    assert report["estimate"]["bytes_to_move"] > 0
    table = openstack(minicloud, region, "cs2os", "import", vm.name,
                      "--flavor", "no-such-flavor", "--dry-run")
    assert table.returncode == 0, table.stderr
    assert "CRITICAL flavor: flavor no-such-flavor not found" in table.stdout
    assert _world(minicloud, conductor_api, ctxt, vm) == before
