"""``openstack cs2os import --mode live [--live-fallback]`` and a plan's
``--mode live --live-fallback`` defaults."""

import pytest
import requests_mock

from cs2os_agent.common import microversions
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


def test_import_live_with_its_fallback(api):
    _, args = parse(migration.ImportMigration,
                    ["web-1", "--mode", "live", "--live-fallback"])
    assert (args.mode, args.live_fallback) == ("live", True)
    api.post(URL, status_code=202, json={"migration": dict(
        RECORD, mode="live", live_fallback=True)})
    run(migration.ImportMigration,
        ["web-1", "--mode", "live", "--live-fallback", "-f", "json"],
        FakeApp())
    sent = api.request_history[0]
    assert sent.json() == {"migration": {
        "source": "web-1", "mode": "live", "live_fallback": True}}
    # The client asks for the version that has them.
    service, version = sent.headers["OpenStack-API-Version"].split()
    assert service == "cs2os"
    assert microversions.Version.parse(version) >= (1, 15)


def test_import_live_without_fallback_sends_none(api):
    api.post(URL, status_code=202, json={"migration": RECORD})
    run(migration.ImportMigration, ["web-1", "--mode", "live", "-f",
                                    "json"], FakeApp())
    assert api.request_history[0].json() == {"migration": {
        "source": "web-1", "mode": "live"}}


def test_an_unknown_mode_is_refused_by_the_parser():
    with pytest.raises(SystemExit):
        parse(migration.ImportMigration, ["web-1", "--mode", "hot"])


def test_a_plan_defaults_to_live():
    _, args = parse(plan.CreatePlan, ["wave-1", "--vm", "web-1", "--mode",
                                      "live", "--live-fallback"])
    assert (args.mode, args.live_fallback) == ("live", True)
