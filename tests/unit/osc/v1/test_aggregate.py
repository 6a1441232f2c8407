"""``openstack cs2os import --aggregate`` and ``plan create --aggregate``:
a Nova host aggregate instead of a host (as test_migration_volume_type.py).
"""

import json

import pytest
import requests_mock

from cs2os_agent.osc.v1 import migration
from cs2os_agent.osc.v1 import plan
from tests.unit.osc.v1.test_migration import ENDPOINT
from tests.unit.osc.v1.test_migration import RECORD
from tests.unit.osc.v1.test_migration import URL
from tests.unit.osc.v1.test_migration import FakeApp
from tests.unit.osc.v1.test_migration import run


@pytest.fixture
def api():
    with requests_mock.Mocker() as m:
        yield m


def test_import_sends_the_aggregate_and_shows_it_by_the_host(api):
    api.post(URL, status_code=202, json={"migration": dict(
        RECORD, aggregate="wave-3", target_host="cmp-2")})
    out = run(migration.ImportMigration,
              ["web-1", "--aggregate", "wave-3", "-f", "json"], FakeApp())
    assert api.request_history[0].json() == {"migration": {
        "source": "web-1", "aggregate": "wave-3"}}
    shown = json.loads(out)
    assert shown["aggregate"] == "wave-3"
    fields = list(shown)
    assert fields.index("aggregate") == fields.index("target_host") + 1


def test_a_record_without_it_does_not_show_it(api):
    api.post(URL, status_code=202, json={"migration": RECORD})
    out = run(migration.ImportMigration, ["web-1", "-f", "json"], FakeApp())
    assert "aggregate" not in api.request_history[0].json()["migration"]
    assert "aggregate" not in json.loads(out)


def test_plan_create_aggregate_replaces_the_files_host(api, tmp_path):
    doc = tmp_path / "wave.yaml"
    doc.write_text("defaults:\n  mode: cold\n  host: cmp-1\nvms:\n"
                   "  - web-1\n  - vm: db-1\n    overrides: {host: cmp-9}\n")
    api.post(ENDPOINT + "/v1/plans", status_code=201, json={"plan": {
        "id": "p-1", "name": "wave-3", "state": "draft", "vms": []}})
    run(plan.CreatePlan, ["wave-3", "--file", str(doc), "--aggregate",
                          "wave-3-hosts", "-f", "json"], FakeApp())
    assert api.request_history[0].json() == {"plan": {
        "name": "wave-3",
        "defaults": {"mode": "cold", "aggregate": "wave-3-hosts"},
        "vms": ["web-1", {"vm": "db-1", "overrides": {"host": "cmp-9"}}]}}
