"""The target project in ``openstack cs2os``: ``import --project``,
``migration list --project`` and the Target Project column.

As tests/unit/osc/v1/test_migration.py: cliff's own ``run`` with a real
REST client, requests_mock playing the API.
"""

import json

import pytest
import requests_mock

from cs2os_agent.osc.v1 import migration
from tests.unit.osc.v1.test_migration import RECORD
from tests.unit.osc.v1.test_migration import URL
from tests.unit.osc.v1.test_migration import FakeApp
from tests.unit.osc.v1.test_migration import parse
from tests.unit.osc.v1.test_migration import run


@pytest.fixture
def api():
    with requests_mock.Mocker() as m:
        yield m


def test_import_sends_the_project(api):
    api.post(URL, status_code=202, json={"migration": RECORD})
    out = run(migration.ImportMigration,
              ["web-1", "--project", "tenant-a", "-f", "json"], FakeApp())
    assert api.request_history[0].json() == {"migration": {
        "source": "web-1", "project": "tenant-a"}}
    shown = json.loads(out)
    # The creator's project, then the one the server lands in.
    fields = list(shown)
    assert fields.index("target_project_id") == \
        fields.index("project_id") + 1
    assert shown["target_project_id"] == "tp-1"


def test_import_without_a_project_sends_none():
    _, args = parse(migration.ImportMigration, ["web-1"])
    assert args.project is None


def test_list_filters_on_the_project_and_shows_it(api):
    api.get(URL, json={"migrations": [
        RECORD, dict(RECORD, id="m-2", target_project_id=None)]})
    out = run(migration.ListMigration,
              ["--project", "8f2c1e0a", "--state", "running", "-f", "json"],
              FakeApp())
    assert api.request_history[0].url == \
        URL + "?state=running&project=8f2c1e0a"
    rows = json.loads(out)
    # Not resolved yet: empty.
    assert [r["Target Project"] for r in rows] == ["tp-1", None]


def test_the_list_shows_the_target_project_after_the_host():
    names = [name for name, _ in migration.LIST_COLUMNS]
    assert names.index("Target Project") == names.index("Host") + 1


def test_show_displays_the_target_project(api):
    api.get(URL + "/m-1", json={"migration": RECORD})
    out = run(migration.ShowMigration, ["m-1"], FakeApp())
    lines = {line.split("|")[1].strip(): line.split("|")[2].strip()
             for line in out.splitlines() if line.startswith("| ")}
    assert (lines["project_id"], lines["target_project_id"]) == ("p-1",
                                                                 "tp-1")
