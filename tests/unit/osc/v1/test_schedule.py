"""--start-at, the cutover window and a plan's limits on the command line,
and a plan's event log (plan show --events): the exact request sent."""

import json

import pytest
import requests_mock
from osc_lib import exceptions as osc_exc

from cs2os_agent.osc.v1 import migration
from cs2os_agent.osc.v1 import plan as plan_cmd
from tests.unit.osc.v1.test_migration import ENDPOINT
from tests.unit.osc.v1.test_migration import RECORD
from tests.unit.osc.v1.test_migration import FakeApp
from tests.unit.osc.v1.test_migration import parse
from tests.unit.osc.v1.test_migration import run
from tests.unit.osc.v1.test_plan import PID
from tests.unit.osc.v1.test_plan import URL
from tests.unit.osc.v1.test_plan import _plan
from tests.unit.osc.v1.test_plan import _row

T1, T2 = "2030-01-01T02:00:00Z", "2030-01-01T04:00:00Z"


@pytest.fixture
def mock():
    with requests_mock.Mocker() as m:
        yield m


def test_import_sends_start_at_and_the_window(mock):
    app = FakeApp()
    mock.post(ENDPOINT + "/v1/migrations", status_code=202, json={
        "migration": dict(RECORD, mode="warm", start_at=T1,
                          cutover_window={"start": T1, "end": T2})})
    out = run(migration.ImportMigration, [
        "web-1", "--mode", "warm", "--start-at", T1,
        "--cutover-window-start", T1, "--cutover-window-end", T2,
        "-f", "json"], app)
    assert mock.request_history[0].json() == {"migration": {
        "source": "web-1", "mode": "warm", "start_at": T1,
        "cutover_window": {"start": T1, "end": T2}}}
    shown = json.loads(out)
    assert (shown["start_at"], shown["cutover_window"]) == (
        T1, {"start": T1, "end": T2})


def test_a_window_needs_both_ends():
    cmd, parsed = parse(migration.ImportMigration, [
        "web-1", "--cutover-window-start", T1])
    with pytest.raises(osc_exc.CommandError, match="go together"):
        cmd.take_action(parsed)


def test_plan_create_sends_its_start_time_limits_and_window(mock):
    app = FakeApp()
    mock.post(URL, status_code=201, json={"plan": _plan(
        "draft", _row("web-1", "pending"), limits={"max_per_pool": 2})})
    run(plan_cmd.CreatePlan, [
        "wave-1", "--vm", "web-1", "--mode", "warm", "--start-at", T1,
        "--cutover-window-start", T1, "--cutover-window-end", T2,
        "--max-per-compute-host", "3", "--max-per-pool", "2", "-f",
        "json"], app)
    assert mock.request_history[0].json() == {"plan": {
        "name": "wave-1", "vms": ["web-1"], "start_at": T1,
        "defaults": {"mode": "warm",
                     "cutover_window": {"start": T1, "end": T2}},
        "limits": {"max_per_compute_host": 3, "max_per_pool": 2}}}


def test_plan_show_events_lists_the_log(mock):
    app = FakeApp()
    events = [{"created_at": "2030-01-01T01:00:00", "kind": "created",
               "vm": None, "migration_id": None, "message": "plan made"},
              {"created_at": "2030-01-01T02:00:05", "kind": "ended",
               "vm": "web-1", "migration_id": "m-1",
               "message": "VM web-1: migration m-1 ended succeeded"}]
    mock.get(URL + "/" + PID, json={"plan": _plan(
        "done", _row("web-1", "succeeded"), events=events)})
    out = run(plan_cmd.ShowPlan, [PID, "--events", "-f", "json"], app)
    assert json.loads(out) == [
        {"Time": e["created_at"], "Kind": e["kind"], "VM": e["vm"],
         "Migration": e["migration_id"], "Message": e["message"]}
        for e in events]
