"""Plans end to end: a named set of migrations with shared defaults,
validated (every VM's preflight), started (one migration per VM without a
critical finding) and watched to the end, on the real chain (CloudStack
stand-in with KVM VMs, cs2os-conductor, cs2os-agent, the minicloud's
Nova); from a VM list, from a CloudStack selector, and through the real
`openstack cs2os plan ...` against a cs2os-api in the catalog."""

import json
import uuid

import pytest

from cs2os_agent.conductor import rpcapi as conductor_rpcapi
from tests.e2e.conftest import RUN_ID
from tests.e2e.conftest import new_vm
from tests.e2e.conftest import refuse_to_stop

# The cs2os-api behind the minicloud's catalog, and the real openstack
# command (fixtures, taken by name).
from tests.e2e.test_api_cli import api  # noqa: F401
from tests.e2e.test_api_cli import openstack
from tests.e2e.test_api_cli import region  # noqa: F401
from tools.testbed import images
from tools.testbed.harness import wait_console
from tools.testbed.harness import wait_for

BAD_FLAVOR = "no-such-flavor-%s" % RUN_ID


@pytest.fixture(scope="module")
def plans_api(services):
    """For validate_plan and start_plan, which run every VM's preflight
    inside the call (guide: Plans): on a busy machine three take longer
    than the session's 3 s RPC timeout (tools/testbed/harness.py)."""
    return conductor_rpcapi.ConductorAPI(timeout=60)


def _wait_done(conductor_api, ctxt, plan_id, timeout=300):
    seen = {}

    def done():
        seen["plan"] = conductor_api.get_plan(ctxt, plan_id)
        return seen["plan"]["state"] != "running"
    wait_for(done, timeout, "plan %s to end" % plan_id, interval=1)
    return seen["plan"]


def _servers(minicloud):
    return {s.metadata.get("cs2os_migration_id"): s
            for s in minicloud.conn.compute.servers(all_projects=True)
            if "cs2os_migration_id" in (s.metadata or {})}


def test_a_plan_of_three_vms_one_skipped_by_preflight(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        plans_api):
    vms = [new_vm(cloud, cloudstack_root) for _ in range(3)]
    plan = conductor_api.create_plan(ctxt, {
        "name": "wave-%s" % RUN_ID,
        "defaults": {"host": minicloud.compute_host},
        "vms": [vms[0].name, vms[1].id,
                {"vm": vms[2].name, "overrides": {"flavor": BAD_FLAVOR}}]})
    assert plan["state"] == "draft"
    assert [r["vm_id"] for r in plan["vms"]] == [vm.id for vm in vms]
    assert conductor_api.list_migrations(ctxt) == []

    checked = plans_api.validate_plan(ctxt, plan["id"])
    reports = [r["preflight"] for r in checked["vms"]]
    assert [r["ok"] for r in reports] == [True, True, False], reports
    assert {"check": "flavor", "severity": "critical", "message":
            "flavor %s not found, named by the request" % BAD_FLAVOR} in \
        reports[2]["findings"]
    # A preflight records and creates nothing.
    assert conductor_api.list_migrations(ctxt) == []

    started = plans_api.start_plan(ctxt, plan["id"])
    assert started["state"] == "running"
    assert [r["state"] for r in started["vms"]][2] == "skipped"
    done = _wait_done(conductor_api, ctxt, plan["id"])
    assert done["state"] == "done"
    counts = done["counts"]
    assert (counts["succeeded"], counts["skipped"], counts["failed"]) == \
        (2, 1, 0), done["vms"]
    first, second, skipped = done["vms"]
    assert skipped["migration_id"] is None
    assert skipped["error"].startswith("skipped by preflight: flavor %s"
                                       % BAD_FLAVOR)
    assert done["bytes_total"] > 0
    # The records say which plan made them; Nova has exactly their
    # servers; the skipped VM still runs in CloudStack.
    records = conductor_api.list_migrations(ctxt, {"plan_id": plan["id"]})
    assert sorted(m["id"] for m in records) == sorted(
        [first["migration_id"], second["migration_id"]])
    assert {m["source_vm_id"] for m in records} == {vms[0].id, vms[1].id}
    servers = _servers(minicloud)
    for row in (first, second):
        server = servers[row["migration_id"]]
        assert (server.status, server.compute_host) == (
            "ACTIVE", minicloud.compute_host)
    assert not [s for s in servers.values() if s.name == vms[2].name]
    assert cloud.vm_state(vms[2]) == "Running"
    # Room for the next tests' servers (the minicloud holds a few).
    for row in (first, second):
        minicloud.conn.compute.delete_server(servers[row["migration_id"]])

    # Nothing to retry; and it can go now that nothing is active.
    listed = conductor_api.list_plans(ctxt, {"state": "done"})
    assert plan["id"] in [p["id"] for p in listed]
    conductor_api.delete_plan(ctxt, plan["id"])
    assert plan["id"] not in [p["id"] for p in
                              conductor_api.list_plans(ctxt)]


def test_a_plan_retries_its_failed_vm_and_is_cancelled(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        monkeypatch, plans_api):
    vm = new_vm(cloud, cloudstack_root)
    refuse_to_stop(monkeypatch, vm)
    plan = conductor_api.create_plan(ctxt, {
        "name": "retry-%s" % RUN_ID, "vms": [vm.name],
        "defaults": {"host": minicloud.compute_host}})
    plans_api.start_plan(ctxt, plan["id"])
    failed = _wait_done(conductor_api, ctxt, plan["id"])
    assert (failed["state"], failed["counts"]["failed"]) == ("done", 1)
    (reason,) = failed["failed"]
    assert "hypervisor busy" in reason["error"], reason
    # CloudStack stops VMs again: the retry moves it.
    monkeypatch.undo()
    retried = conductor_api.retry_plan(ctxt, plan["id"])
    assert retried["state"] == "running"
    done = _wait_done(conductor_api, ctxt, plan["id"])
    assert (done["state"], done["counts"]["succeeded"]) == ("done", 1), \
        done["vms"]
    assert done["vms"][0]["migration_id"] == reason["migration_id"]
    server = _servers(minicloud)[reason["migration_id"]]
    minicloud.conn.compute.delete_server(server)

    # A started plan cancelled: its migration is cancelled (nothing of
    # it stays in Nova) and the plan says so.
    other = new_vm(cloud, cloudstack_root)
    plan = conductor_api.create_plan(ctxt, {
        "name": "cancel-%s" % RUN_ID, "vms": [other.id],
        "defaults": {"host": minicloud.compute_host}})
    started = plans_api.start_plan(ctxt, plan["id"])
    cancelled = conductor_api.cancel_plan(ctxt, plan["id"])
    assert cancelled["state"] == "cancelled"
    migration_id = started["vms"][0]["migration_id"]
    wait_for(lambda: conductor_api.get_migration(ctxt, migration_id)[
        "state"] == "cancelled", 120, "the plan's migration cancelled",
        interval=0.5)
    assert conductor_api.get_plan(ctxt, plan["id"])["counts"][
        "cancelled"] == 1
    assert migration_id not in _servers(minicloud)
    wait_for(lambda: cloud.vm_state(other) == "Running", 60,
             "the VM running again")
    conductor_api.delete_plan(ctxt, plan["id"])


def _vm(cloud, cloudstack_root, account, tags=None):
    volume = images.make_cloudstack_volume(cloudstack_root)
    vm = cloud.add_kvm_vm("e2e-%s-%s" % (RUN_ID, uuid.uuid4().hex[:6]),
                          volume, account, cloud.kvm_host,
                          offering=cloud.offering, tags=tags)
    vm.volume = volume
    wait_console(cloud.kvm.console(vm.instancename), volume.message)
    return vm


def test_a_plan_from_a_cloudstack_selector(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root,
        plans_api):
    domain = cloud.add_domain("sales-%s" % RUN_ID)
    account = cloud.add_account("shop-%s" % RUN_ID, admin=False,
                                domain=domain)
    tagged = _vm(cloud, cloudstack_root, account, tags={"wave": RUN_ID})
    other = _vm(cloud, cloudstack_root, account)
    elsewhere = _vm(cloud, cloudstack_root, cloud.admin,
                    tags={"wave": RUN_ID})
    by_account = conductor_api.create_plan(ctxt, {
        "name": "by-account-%s" % RUN_ID,
        "selector": {"account": account.name, "domain": domain.name}})
    assert by_account["selector"] == {"account": account.name,
                                      "domain": domain.name}
    assert sorted(r["vm_id"] for r in by_account["vms"]) == sorted(
        [tagged.id, other.id])
    by_tag = conductor_api.create_plan(ctxt, {
        "name": "by-tag-%s" % RUN_ID,
        "selector": {"tag": "wave=%s" % RUN_ID}})
    assert sorted(r["vm_id"] for r in by_tag["vms"]) == sorted(
        [tagged.id, elsewhere.id])
    both = conductor_api.create_plan(ctxt, {
        "name": "both-%s" % RUN_ID, "vms": [other.name],
        "selector": {"tag": "wave=%s" % RUN_ID, "domain": domain.id}})
    assert [r["vm_id"] for r in both["vms"]] == [other.id, tagged.id]
    by_host = conductor_api.create_plan(ctxt, {
        "name": "by-host-%s" % RUN_ID,
        "selector": {"host": cloud.kvm_host.name}})
    assert {tagged.id, other.id, elsewhere.id} <= {
        r["vm_id"] for r in by_host["vms"]}
    # Each VM's preflight: the selector's VMs are real ones.
    checked = plans_api.validate_plan(ctxt, by_tag["id"])
    assert [r["preflight"]["ok"] for r in checked["vms"]] == [True, True], \
        checked["vms"]


def test_openstack_cs2os_plan_create_validate_start_wait(
        api, region, conductor, cloud, minicloud,  # noqa: F811
        cloudstack_root):
    vm = new_vm(cloud, cloudstack_root)
    name = "cli-%s" % RUN_ID
    created = openstack(minicloud, region, "cs2os", "plan", "create", name,
                        "--vm", vm.name, "--host", minicloud.compute_host,
                        "-f", "json")
    assert created.returncode == 0, created.stderr
    plan = json.loads(created.stdout)
    assert (plan["name"], plan["state"]) == (name, "draft")
    checked = openstack(minicloud, region, "cs2os", "plan", "validate",
                        plan["id"], "-f", "json")
    assert checked.returncode == 0, checked.stderr
    findings = json.loads(checked.stdout)
    assert findings and all(f["Severity"] != "critical" for f in findings)
    started = openstack(minicloud, region, "cs2os", "plan", "start",
                        plan["id"], "--wait", "--poll-interval", "1",
                        "-f", "json")
    assert started.returncode == 0, started.stderr
    (row,) = json.loads(started.stdout)
    assert (row["VM"], row["State"]) == (vm.name, "succeeded")
    # The per-VM lines and the overall progress went to stderr.
    assert "%s: running" % vm.name in started.stderr
    assert "done; 1 succeeded" in started.stderr
    shown = openstack(minicloud, region, "cs2os", "plan", "show",
                      plan["id"], "-f", "value", "-c", "State")
    assert shown.stdout.strip() == "succeeded"
    listed = openstack(minicloud, region, "cs2os", "plan", "list",
                       "--name", name, "-f", "json")
    assert [(p["ID"], p["State"], p["Succeeded"]) for p in
            json.loads(listed.stdout)] == [(plan["id"], "done", 1)]
