"""The plugin as ``openstack`` sees it: entry points and in-process runs.

The shell tests run ``openstackclient.shell.OpenStackShell().run(argv)``
in this process (no subprocess), with requests_mock as the cs2os API, so
they cover option parsing, plugin loading, make_client, the token on the
wire, the printed text and the exit code together.
"""

import importlib.metadata
import json
import logging

import pytest
import requests_mock
from cliff import commandmanager
from keystoneauth1 import fixture as ksa_fixture
from openstackclient import shell
from openstackclient.common import clientmanager as osc_clientmanager
from osc_lib import clientmanager as osc_lib_clientmanager
from osc_lib import utils as osc_utils

from cs2os_agent.osc import client
from cs2os_agent.osc import plugin
from cs2os_agent.osc.v1 import migration
from cs2os_agent.osc.v1 import plan

API = "http://127.0.0.1:9877"
OTHER = "http://127.0.0.1:9999"
TOKEN = "tok-123"
AUTH = ["--os-endpoint", API, "--os-token", TOKEN]
RECORD = {"id": "m-1", "state": "running", "step": "image",
          "source_ref": "web-1", "bytes_done": 0, "bytes_total": 10}


def test_entry_point_loads_the_plugin_module():
    (ep,) = [ep for ep in importlib.metadata.entry_points(
        group="openstack.cli.extension") if ep.name == "cs2os"]
    module = ep.load()
    assert module is plugin
    assert (module.API_NAME, module.API_VERSION_OPTION,
            module.DEFAULT_API_VERSION) == ("cs2os", "os_cs2os_api_version",
                                            "1")
    assert osc_utils.get_client_class(
        "cs2os", "1", module.API_VERSIONS) is client.Client


def test_openstackclient_discovered_the_plugin():
    assert plugin in osc_clientmanager.PLUGIN_MODULES


def test_every_command_entry_point_loads():
    loaded = {ep.name: ep.load() for ep in importlib.metadata.entry_points(
        group="openstack.cs2os.v1")}
    assert loaded == {
        "cs2os_import": migration.ImportMigration,
        "cs2os_migration_list": migration.ListMigration,
        "cs2os_migration_show": migration.ShowMigration,
        "cs2os_migration_cancel": migration.CancelMigration,
        "cs2os_migration_retry": migration.RetryMigration,
        "cs2os_migration_cutover": migration.CutoverMigration,
        "cs2os_plan_create": plan.CreatePlan,
        "cs2os_plan_list": plan.ListPlan,
        "cs2os_plan_show": plan.ShowPlan,
        "cs2os_plan_validate": plan.ValidatePlan,
        "cs2os_plan_start": plan.StartPlan,
        "cs2os_plan_cancel": plan.CancelPlan,
        "cs2os_plan_retry": plan.RetryPlan,
        "cs2os_plan_delete": plan.DeletePlan,
    }


@pytest.mark.parametrize("argv, cls, name, rest", [
    (["cs2os", "import", "web-1", "--wait"], migration.ImportMigration,
     "cs2os import", ["web-1", "--wait"]),
    (["cs2os", "migration", "list", "--long"], migration.ListMigration,
     "cs2os migration list", ["--long"]),
])
def test_cliff_command_manager_finds_the_commands(argv, cls, name, rest):
    manager = commandmanager.CommandManager("openstack.cs2os.v1")
    found, found_name, remainder = manager.find_command(argv)
    assert (found, found_name, remainder) == (cls, name, rest)


@pytest.fixture
def osc(monkeypatch, tmp_path, capsys):
    """Run ``openstack <argv>`` in-process; returns (rc, stdout, stderr)."""
    for name in list(__import__("os").environ):
        if name.startswith("OS_"):
            monkeypatch.delenv(name)
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds: {}\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    # OSC caches each plugin's client on the ClientManager class, and its
    # logging setup adds root handlers: both outlive one run.
    cache = vars(osc_lib_clientmanager.ClientManager)["cs2os"]
    root = logging.getLogger()
    saved = root.handlers[:], root.level

    def run(*argv):
        cache._handle = None
        capsys.readouterr()
        rc = shell.OpenStackShell().run(list(argv))
        out, err = capsys.readouterr()
        return rc, out, err

    yield run
    cache._handle = None
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


@pytest.fixture
def mock():
    with requests_mock.Mocker() as m:
        yield m


def test_show_through_the_openstack_shell(osc, mock):
    mock.get(API + "/v1/migrations/m-1", json={"migration": RECORD})
    rc, out, _ = osc(*AUTH, "cs2os", "migration", "show", "m-1", "-f",
                     "json")
    assert rc == 0
    assert json.loads(out)["source_ref"] == "web-1"
    (req,) = mock.request_history
    assert (req.method, req.url) == ("GET", API + "/v1/migrations/m-1")
    assert req.headers["X-Auth-Token"] == TOKEN


def test_endpoint_option_overrides_the_auth_endpoint(osc, mock):
    mock.get(OTHER + "/v1/migrations", json={"migrations": [RECORD]})
    rc, out, _ = osc(*AUTH, "--os-cs2os-endpoint", OTHER, "--os-cs2os-api-"
                     "version", "1", "cs2os", "migration", "list", "-f",
                     "value", "-c", "ID")
    assert (rc, out) == (0, "m-1\n")
    assert mock.request_history[0].url == OTHER + "/v1/migrations"


def test_endpoint_environment_variable(osc, mock, monkeypatch):
    # Any OS_* variable makes openstacksdk build a cloud from the
    # environment, so the rest of the auth comes from there too.
    for name, value in [("OS_AUTH_TYPE", "admin_token"), ("OS_TOKEN", TOKEN),
                        ("OS_ENDPOINT", API), ("OS_CS2OS_ENDPOINT", OTHER)]:
        monkeypatch.setenv(name, value)
    mock.post(OTHER + "/v1/migrations/m-1/action", status_code=202,
              json={"migration": dict(RECORD, state="cancelling")})
    rc, out, _ = osc("cs2os", "migration", "cancel", "m-1", "-f",
                     "value", "-c", "state")
    assert (rc, out) == (0, "cancelling\n")
    (req,) = mock.request_history
    assert req.json() == {"cancel": {}}
    assert req.headers["X-Auth-Token"] == TOKEN


def test_password_auth_finds_the_endpoint_in_the_catalog(osc, mock):
    keystone = "http://127.0.0.1:5000/v3"
    token = ksa_fixture.V3Token(project_name="demo")
    token.set_project_scope(name="demo")
    token.add_service("cs2os").add_standard_endpoints(
        public=API, internal=OTHER, region="RegionOne")
    mock.get(keystone, json=ksa_fixture.V3Discovery(keystone))
    mock.post(keystone + "/auth/tokens", json=token, status_code=201,
              headers={"X-Subject-Token": TOKEN})
    mock.get(OTHER + "/v1/migrations?state=failed", json={"migrations": []})
    rc, out, err = osc(
        "--os-auth-url", keystone, "--os-username", "u", "--os-password",
        "p", "--os-project-name", "demo", "--os-user-domain-id", "default",
        "--os-project-domain-id", "default", "--os-region-name",
        "RegionOne", "--os-interface", "internal", "cs2os", "migration",
        "list", "--state", "failed", "-f", "json")
    assert (rc, json.loads(out)) == (0, [])
    req = mock.request_history[-1]
    assert req.url == OTHER + "/v1/migrations?state=failed"
    assert req.headers["X-Auth-Token"] == TOKEN


def test_no_auth_sends_to_the_given_endpoint(osc, mock):
    mock.get(API + "/v1/migrations", json={"migrations": [RECORD]})
    rc, out, _ = osc("--os-auth-type", "none", "--os-endpoint", API,
                     "cs2os", "migration", "list", "-f", "value", "-c",
                     "Progress")
    assert (rc, out) == (0, "0\n")


def test_api_error_exits_1_with_the_detail(osc, mock):
    mock.get(API + "/v1/migrations/1234", status_code=404, json={"errors": [{
        "status": 404, "code": "cs2os.MigrationNotFound",
        "title": "Not Found", "detail": "Migration 1234 could not be found.",
        "request_id": "req-1"}]})
    rc, out, err = osc(*AUTH, "cs2os", "migration", "show", "1234")
    assert (rc, out) == (1, "")
    assert ("Migration 1234 could not be found. "
            "(HTTP 404, cs2os.MigrationNotFound, req-1)") in err


def test_wait_on_a_failed_migration_exits_1(osc, mock, monkeypatch):
    monkeypatch.setattr(migration._Watching, "sleep",
                        staticmethod(lambda s: None))
    mock.post(API + "/v1/migrations", status_code=202,
              json={"migration": RECORD})
    mock.get(API + "/v1/migrations/m-1", json={"migration": dict(
        RECORD, state="failed", step="boot", error="No valid host")})
    rc, out, err = osc(*AUTH, "cs2os", "import", "web-1", "--wait")
    assert (rc, out) == (1, "")
    assert "Migration m-1 failed at step boot: No valid host" in err


def test_ctrl_c_exits_130_and_leaves_the_migration_alone(osc, mock,
                                                         monkeypatch):
    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(migration._Watching, "sleep",
                        staticmethod(interrupted))
    mock.post(API + "/v1/migrations", status_code=202,
              json={"migration": RECORD})
    rc, out, err = osc(*AUTH, "cs2os", "import", "web-1", "--wait")
    assert (rc, out) == (130, "")
    assert ("Watch it again with: openstack cs2os migration show --wait "
            "m-1") in err
    # Only the create went out: no cancel action, no further polling.
    assert [(r.method, r.url) for r in mock.request_history] == [
        ("POST", API + "/v1/migrations")]
