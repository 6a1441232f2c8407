"""cs2os_agent.osc.v1.plan: what `openstack cs2os plan ...` sends and
prints (a real REST client; requests_mock plays the API)."""

import json

import pytest
import requests_mock
from osc_lib import exceptions as osc_exc

from cs2os_agent.osc.v1 import plan as plan_cmd
from tests.fakes.clock import FakeClock
from tests.unit.osc.v1.test_migration import ENDPOINT
from tests.unit.osc.v1.test_migration import FakeApp
from tests.unit.osc.v1.test_migration import parse
from tests.unit.osc.v1.test_migration import run

URL = ENDPOINT + "/v1/plans"
PID = "p-1"


@pytest.fixture
def mock():
    with requests_mock.Mocker() as m:
        yield m


@pytest.fixture
def app():
    return FakeApp()


def _row(vm, state, **values):
    return dict({"vm": vm, "vm_id": "id-" + vm, "vm_name": vm,
                 "migration_id": None, "state": state, "step": None,
                 "error": None, "bytes_done": 0, "bytes_total": 0,
                 "preflight": None}, **values)


def _plan(state, *rows, **values):
    counts = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return dict({"id": PID, "name": "wave-1", "state": state,
                 "vm_count": len(rows), "counts": counts, "bytes_done": 0,
                 "bytes_total": 0, "defaults": {}, "selector": None,
                 "failed": [], "vms": list(rows)}, **values)


def test_create_sends_vms_file_selector_and_defaults(
        mock, app, tmp_path):
    doc = tmp_path / "plan.json"
    doc.write_text(json.dumps({
        "defaults": {"mode": "cold", "host": "old"},
        "vms": [{"vm": "db-1", "overrides": {"flavor": "m1.large"}}],
        "selector": {"zone": "z1"}}))
    mock.post(URL, status_code=201, json={"plan": _plan(
        "draft", _row("db-1", "pending"), _row("web-1", "pending"))})
    out = run(plan_cmd.CreatePlan, [
        "wave-1", "--file", str(doc), "--vm", "web-1", "--host", "cmp1",
        "--network", "guest=private", "--tag", "tier=web", "--kvm-host",
        "kvm-1", "--target-project", "acme", "--config-drive", "-f",
        "json"], app)
    assert mock.request_history[0].json() == {"plan": {
        "name": "wave-1",
        "defaults": {"mode": "cold", "host": "cmp1", "project": "acme",
                     "networks": {"guest": "private"},
                     "config_drive": True},
        "vms": [{"vm": "db-1", "overrides": {"flavor": "m1.large"}},
                "web-1"],
        "selector": {"zone": "z1", "tag": "tier=web", "host": "kvm-1"}}}
    shown = json.loads(out)
    assert (shown["id"], shown["state"]) == (PID, "draft")
    assert [r["vm"] for r in shown["vms"]] == ["db-1", "web-1"]


def test_create_reads_a_yaml_plan_file(mock, app, tmp_path):
    doc = tmp_path / "wave.yaml"
    doc.write_text("defaults:\n  mode: cold\nvms:\n  - web-1\n"
                   "  - vm: db-1\n    overrides: {flavor: m1.large}\n")
    mock.post(URL, status_code=201, json={"plan": _plan(
        "draft", _row("web-1", "pending"), _row("db-1", "pending"))})
    run(plan_cmd.CreatePlan, ["wave-2", "--file", str(doc), "-f", "json"],
        app)
    assert mock.request_history[0].json() == {"plan": {
        "name": "wave-2", "defaults": {"mode": "cold"},
        "vms": ["web-1", {"vm": "db-1", "overrides": {"flavor": "m1.large"}}]}}


def test_create_refuses_a_file_that_is_not_a_plan(app, tmp_path):
    doc = tmp_path / "plan.json"
    doc.write_text("[1, 2]")
    cmd, parsed = parse(plan_cmd.CreatePlan, ["p", "--file", str(doc)], app)
    with pytest.raises(osc_exc.CommandError, match="must hold a mapping"):
        cmd.take_action(parsed)
    doc.write_text("defaults: [unclosed")
    cmd, parsed = parse(plan_cmd.CreatePlan, ["p", "--file", str(doc)], app)
    with pytest.raises(osc_exc.CommandError, match="Cannot read plan file"):
        cmd.take_action(parsed)


def test_validate_prints_the_findings_table(mock, app):
    bad = {"ok": False, "summary": "1 critical, 1 warnings", "findings": [
        {"check": "network", "severity": "warning", "message": "dropped"},
        {"check": "flavor", "severity": "critical", "message": "no such"}]}
    mock.post(URL + "/p-1/action", status_code=202, json={"plan": _plan(
        "draft", _row("web-1", "pending", preflight={
            "ok": True, "summary": "0 critical, 0 warnings",
            "findings": []}),
        _row("db-1", "pending", preflight=bad))})
    out = run(plan_cmd.ValidatePlan, [PID, "-f", "json"], app)
    assert mock.request_history[0].json() == {"validate": {}}
    assert json.loads(out) == [
        {"VM": "web-1", "Severity": "ok", "Check": None,
         "Message": "no findings"},
        {"VM": "db-1", "Severity": "critical", "Check": "flavor",
         "Message": "no such"},
        {"VM": "db-1", "Severity": "warning", "Check": "network",
         "Message": "dropped"}]
    assert "1 of 2 VMs have a critical finding" in app.stderr.getvalue()


def test_start_wait_shows_each_vm_and_the_whole(mock, app):
    mock.post(URL + "/p-1/action", status_code=202, json={"plan": _plan(
        "running", _row("web-1", "queued", migration_id="m-1"),
        _row("db-1", "skipped", error="skipped by preflight: no such"))})
    mock.get(URL + "/p-1", [
        {"json": {"plan": _plan(
            "running", _row("web-1", "running", step="sync",
                            migration_id="m-1", bytes_total=1024**2),
            _row("db-1", "skipped"), bytes_total=1024**2)}},
        {"json": {"plan": _plan(
            "done", _row("web-1", "succeeded", step="done",
                         migration_id="m-1"), _row("db-1", "skipped"))}}])
    out = run(plan_cmd.StartPlan, [PID, "--wait", "-f", "value", "-c",
                                   "VM", "-c", "State"], app, FakeClock())
    assert out == "web-1 succeeded\ndb-1 skipped\n"
    err = app.stderr.getvalue()
    assert "web-1: running (sync) migration m-1" in err
    assert "db-1: skipped: skipped by preflight: no such" in err
    assert "Plan p-1 (wave-1): done; 1 skipped, 1 succeeded" in err
    assert "0.0 MiB / 1.0 MiB" in err


def test_start_wait_exits_1_when_a_migration_failed(mock, app):
    mock.post(URL + "/p-1/action", status_code=202, json={"plan": _plan(
        "done", _row("web-1", "failed", error="boom"))})
    cmd, parsed = parse(plan_cmd.StartPlan, [PID, "--wait"], app)
    assert cmd.run(parsed) == 1


def test_list_show_cancel_retry_and_delete(mock, app):
    mock.get(URL + "?state=done", json={"plans": [_plan(
        "done", _row("a", "succeeded"), _row("b", "failed"))]})
    out = run(plan_cmd.ListPlan, ["--state", "done", "-f", "json"], app)
    assert json.loads(out) == [{
        "ID": PID, "Name": "wave-1", "State": "done", "VMs": 2,
        "Queued": 0, "Running": 0, "Succeeded": 1, "Failed": 1,
        "Skipped": 0}]
    mock.get(URL + "/p-1", json={"plan": _plan("running",
                                               _row("a", "queued"))})
    out = run(plan_cmd.ShowPlan, [PID, "-f", "value", "-c", "State"], app)
    assert out.endswith("queued\n")
    for cls, name in ((plan_cmd.CancelPlan, "cancel"),
                      (plan_cmd.RetryPlan, "retry")):
        mock.post(URL + "/p-1/action", status_code=202, json={
            "plan": _plan("running", _row("a", "queued"))})
        run(cls, [PID], app)
        assert mock.request_history[-1].json() == {name: {}}
    mock.delete(URL + "/p-1", status_code=409, json={"errors": [{
        "status": 409, "code": "cs2os.PlanStateConflict",
        "detail": "Plan p-1 is running 1 migration(s)"}]})
    cmd, parsed = parse(plan_cmd.DeletePlan, [PID], app)
    with pytest.raises(osc_exc.CommandError, match="running 1 migration"):
        cmd.take_action(parsed)
    mock.delete(URL + "/p-1", status_code=204)
    cmd.take_action(parsed)
