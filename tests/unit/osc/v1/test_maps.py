"""``openstack cs2os import --project-map/--flavor-map/--volume-type-map``
and the same on ``plan create`` (as test_aggregate.py)."""

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


def test_import_sends_each_map_its_entries(api):
    api.post(URL, status_code=202, json={"migration": RECORD})
    run(migration.ImportMigration,
        ["web-1", "--flavor-map", "Small Instance=m1.small",
         "--flavor-map", "so-2= m1.large", "--project-map", "*=acme",
         "--project-map", "ROOT/shop=a=b", "--volume-type-map",
         "nfs-1=ssd", "-f", "json"], FakeApp())
    assert api.request_history[0].json() == {"migration": {
        "source": "web-1",
        "flavor_map": {"Small Instance": "m1.small", "so-2": "m1.large"},
        # Only the first "=" splits: a value may hold one.
        "project_map": {"*": "acme", "ROOT/shop": "a=b"},
        "volume_type_map": {"nfs-1": "ssd"}}}


def test_import_without_maps_sends_none(api):
    api.post(URL, status_code=202, json={"migration": RECORD})
    run(migration.ImportMigration, ["web-1", "-f", "json"], FakeApp())
    assert api.request_history[0].json() == {"migration": {
        "source": "web-1"}}


@pytest.mark.parametrize("args, message", [
    (["--flavor-map", "Small"], "--flavor-map takes KEY=VALUE, not 'Small'"),
    (["--project-map", "=acme"], "--project-map takes KEY=VALUE"),
    (["--volume-type-map", "p=ssd", "--volume-type-map", "p=hdd"],
     "--volume-type-map names key 'p' twice"),
])
def test_bad_entries_are_refused_before_any_request(api, args, message):
    with pytest.raises(Exception, match=message):
        run(migration.ImportMigration, ["web-1"] + args, FakeApp())
    assert api.request_history == []


def test_plan_create_adds_entries_to_the_files_maps(api, tmp_path):
    doc = tmp_path / "wave.yaml"
    doc.write_text("defaults:\n  flavor_map: {Small: m1.small, Big: m1.xl}"
                   "\nvms:\n  - web-1\n  - vm: db-1\n    overrides:\n"
                   "      project_map: {'*': erp}\n")
    api.post(ENDPOINT + "/v1/plans", status_code=201, json={"plan": {
        "id": "p-1", "name": "wave-3", "state": "draft", "vms": []}})
    run(plan.CreatePlan, ["wave-3", "--file", str(doc), "--flavor-map",
                          "Small=m1.medium", "--project-map", "*=acme",
                          "-f", "json"], FakeApp())
    assert api.request_history[0].json() == {"plan": {
        "name": "wave-3",
        "defaults": {"flavor_map": {"Small": "m1.medium", "Big": "m1.xl"},
                     "project_map": {"*": "acme"}},
        "vms": ["web-1", {"vm": "db-1", "overrides": {
            "project_map": {"*": "erp"}}}]}}
