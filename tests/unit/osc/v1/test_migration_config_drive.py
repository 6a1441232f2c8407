"""``openstack cs2os import --config-drive`` and the config_drive field
a migration shows.

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


def test_import_sends_the_config_drive(api):
    api.post(URL, status_code=202,
             json={"migration": dict(RECORD, config_drive=True)})
    out = run(migration.ImportMigration,
              ["web-1", "--config-drive", "-f", "json"], FakeApp())
    assert api.request_history[0].json() == {"migration": {
        "source": "web-1", "config_drive": True}}
    shown = json.loads(out)
    assert shown["config_drive"] is True
    # Shown with the other options of the request.
    fields = list(shown)
    assert fields.index("config_drive") == \
        fields.index("drop_unmapped_nics") + 1


def test_import_without_the_flag_sends_no_config_drive(api):
    _, args = parse(migration.ImportMigration, ["web-1"])
    assert args.config_drive is None
    api.post(URL, status_code=202, json={"migration": RECORD})
    run(migration.ImportMigration, ["web-1", "-f", "json"], FakeApp())
    # The API's default (false) applies.
    assert api.request_history[0].json() == {"migration": {
        "source": "web-1"}}


def test_the_config_drive_flag_takes_no_value(capsys):
    with pytest.raises(SystemExit) as info:
        parse(migration.ImportMigration, ["web-1", "--config-drive", "yes"])
    assert info.value.code == 2
    assert "unrecognized arguments: yes" in capsys.readouterr().err


def test_show_displays_the_config_drive(api):
    api.get(URL + "/m-1", json={"migration": dict(RECORD,
                                                  config_drive=False)})
    out = run(migration.ShowMigration, ["m-1", "-f", "json"], FakeApp())
    assert json.loads(out)["config_drive"] is False
