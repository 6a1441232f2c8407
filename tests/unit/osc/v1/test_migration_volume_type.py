"""``openstack cs2os import --volume-type`` and the volume_type field a
migration shows (as test_migration_config_drive.py)."""

import json

import pytest
import requests_mock

from cs2os_agent.osc.v1 import migration
from cs2os_agent.osc.v1 import plan
from tests.unit.osc.v1.test_migration import RECORD
from tests.unit.osc.v1.test_migration import URL
from tests.unit.osc.v1.test_migration import FakeApp
from tests.unit.osc.v1.test_migration import parse
from tests.unit.osc.v1.test_migration import run


@pytest.fixture
def api():
    with requests_mock.Mocker() as m:
        yield m


def test_import_sends_the_volume_type_and_shows_it(api):
    api.post(URL, status_code=202,
             json={"migration": dict(RECORD, volume_type="ssd")})
    out = run(migration.ImportMigration,
              ["web-1", "--volume-type", "ssd", "-f", "json"], FakeApp())
    assert api.request_history[0].json() == {"migration": {
        "source": "web-1", "volume_type": "ssd"}}
    shown = json.loads(out)
    assert shown["volume_type"] == "ssd"
    fields = list(shown)
    assert fields.index("volume_type") == fields.index("keep_snapshots") + 1


def test_import_without_it_sends_none(api):
    _, args = parse(migration.ImportMigration, ["web-1"])
    assert args.volume_type is None
    api.post(URL, status_code=202, json={"migration": RECORD})
    run(migration.ImportMigration, ["web-1", "-f", "json"], FakeApp())
    assert "volume_type" not in api.request_history[0].json()["migration"]


def test_a_plan_takes_it_as_a_default():
    _, args = parse(plan.CreatePlan, ["wave-1", "--vm", "web-1",
                                      "--volume-type", "ssd"])
    assert args.volume_type == "ssd"
