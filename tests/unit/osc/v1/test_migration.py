"""cs2os_agent.osc.v1.migration: parsed arguments, requests and output.

Commands run through cliff's own ``run`` (parser, take_action, formatter)
with a real REST client on a keystoneauth session; requests_mock plays
the API, so each test sees the request sent and the text printed.
"""

import io
import json
import types

import pytest
import requests_mock
from keystoneauth1 import session as ksa_session
from keystoneauth1 import token_endpoint
from osc_lib import exceptions as osc_exc

from cs2os_agent.osc import client
from cs2os_agent.osc.v1 import migration
from tests.fakes.clock import FakeClock

ENDPOINT = "http://127.0.0.1:9877"
URL = ENDPOINT + "/v1/migrations"
TOKEN = "tok-123"
GIB = 1024**3

RECORD = {
    "id": "m-1", "state": "running", "step": "image", "mode": "cold",
    "source_ref": "web-1", "source_vm_id": "vm-uuid",
    "source_vm_name": "web-1", "target_host": None, "compute_host": None,
    "flavor": "m1.small",
    "delete_source": False, "networks": {}, "drop_unmapped_nics": False,
    "config_drive": False, "keep_snapshots": False, "volume_type": None,
    "nics": None,
    "bytes_done": GIB,
    "bytes_total": 4 * GIB, "rate_bps": 1048576.0, "error": None,
    "result": None, "resources": {"image_id": "img-1", "host": "cmp-2"},
    "user_id": "u-1", "project_id": "p-1", "target_project_id": "tp-1",
    "request_id": "req-0", "created_at": "2025-01-01T00:00:00Z",
    "updated_at": None, "started_at": None, "finished_at": None,
}


class FakeApp:
    def __init__(self):
        session = ksa_session.Session(
            auth=token_endpoint.Token(ENDPOINT, TOKEN))
        self.client_manager = types.SimpleNamespace(
            cs2os=client.Client(session))
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.options = types.SimpleNamespace(debug=False)


@pytest.fixture
def mock():
    with requests_mock.Mocker() as m:
        yield m


@pytest.fixture
def app():
    return FakeApp()


def parse(cls, argv, app=None):
    cmd = cls(app or FakeApp(), None)
    return cmd, cmd.get_parser("openstack cs2os").parse_args(argv)


def run(cls, argv, app, t=None):
    cmd, parsed = parse(cls, argv, app)
    if t is not None:
        cmd.clock, cmd.sleep = t.monotonic, t.sleep
    assert cmd.run(parsed) == 0
    return app.stdout.getvalue()


def parse_error(cls, argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse(cls, argv)
    assert info.value.code == 2
    return capsys.readouterr().err


# Parsed arguments

def test_import_defaults_send_nothing_optional():
    _, args = parse(migration.ImportMigration, ["web-1"])
    assert (args.source, args.host, args.flavor, args.mode,
            args.delete_source, args.wait, args.poll_interval,
            args.timeout) == ("web-1", None, None, None, None, False, 2.0,
                              None)
    assert (args.cutover, args.cutover_method) == (None, None)


def test_import_every_option():
    _, args = parse(migration.ImportMigration, [
        "web-1", "--host", "cmp-2", "--flavor", "m1.small", "--mode",
        "warm", "--delete-source", "--wait", "--poll-interval", "0.5",
        "--timeout", "600"])
    assert (args.source, args.host, args.flavor, args.mode,
            args.delete_source, args.wait, args.poll_interval,
            args.timeout) == ("web-1", "cmp-2", "m1.small", "warm", True,
                              True, 0.5, 600.0)


def test_import_warm_with_a_manual_cutover(mock, app):
    mock.post(URL, status_code=202,
              json={"migration": dict(RECORD, mode="warm", cutover="manual",
                                      cutover_method="shutdown")})
    out = run(migration.ImportMigration, [
        "web-1", "--mode", "warm", "--cutover", "manual", "-f", "json"], app)
    assert mock.request_history[0].json() == {"migration": {
        "source": "web-1", "mode": "warm", "cutover": "manual"}}
    shown = json.loads(out)
    assert (shown["mode"], shown["cutover"], shown["cutover_method"]) == (
        "warm", "manual", "shutdown")
    # The cutover and its method show next to the mode.
    fields = list(shown)
    assert fields.index("cutover") == fields.index("mode") + 1
    assert fields.index("cutover_method") == fields.index("cutover") + 1


@pytest.mark.parametrize("method", ["shutdown", "force"])
def test_import_warm_with_a_cutover_method(mock, app, method):
    mock.post(URL, status_code=202,
              json={"migration": dict(RECORD, mode="warm", cutover="auto",
                                      cutover_method=method)})
    out = run(migration.ImportMigration, [
        "web-1", "--mode", "warm", "--cutover-method", method, "-f",
        "value", "-c", "cutover_method"], app)
    assert mock.request_history[0].json() == {"migration": {
        "source": "web-1", "mode": "warm", "cutover_method": method}}
    assert out == method + "\n"


def test_import_rejects_an_unknown_cutover(capsys):
    err = parse_error(migration.ImportMigration,
                      ["web-1", "--cutover", "later"], capsys)
    assert "argument --cutover: invalid choice: 'later'" in err


def test_import_rejects_an_unknown_cutover_method(capsys):
    err = parse_error(migration.ImportMigration,
                      ["web-1", "--cutover-method", "reboot"], capsys)
    assert "argument --cutover-method: invalid choice: 'reboot'" in err


def test_cutover_force_option():
    _, args = parse(migration.CutoverMigration, ["m-1"])
    assert (args.migration, args.method) == ("m-1", None)
    _, args = parse(migration.CutoverMigration, ["--force", "m-1"])
    assert (args.migration, args.method) == ("m-1", "force")


def test_cutover_has_no_method_argument(capsys):
    # Only --force: a clean shutdown is the default or the import's.
    assert "unrecognized arguments: --method" in parse_error(
        migration.CutoverMigration, ["m-1", "--method", "force"], capsys)


def test_cutover_force_posts_the_method(mock, app):
    mock.post(URL + "/m-1/action", status_code=202, json={"migration": dict(
        RECORD, mode="warm", step="ready",
        cutover_requested={"by": "u-1", "method": "force"})})
    out = run(migration.CutoverMigration,
              ["m-1", "--force", "-f", "value", "-c", "id"], app)
    assert out == "m-1\n"
    req = mock.request_history[0]
    assert (req.method, req.url, req.json()) == (
        "POST", URL + "/m-1/action", {"cutover": {"method": "force"}})
    assert len(mock.request_history) == 1


def test_cutover_wait_watches_until_the_end(mock, app):
    held = dict(RECORD, mode="warm", state="running", step="cutover",
                bytes_done=GIB, bytes_total=GIB)
    mock.post(URL + "/m-1/action", status_code=202,
              json={"migration": held})
    mock.get(URL + "/m-1", [
        {"json": {"migration": dict(held, step="start")}},
        {"json": {"migration": dict(held, state="succeeded",
                                    step="done")}}])
    t = FakeClock()
    out = run(migration.CutoverMigration,
              ["m-1", "--wait", "-f", "value", "-c", "state"], app, t)
    assert out == "succeeded\n"
    assert mock.request_history[0].json() == {"cutover": {}}
    assert "running cutover" in app.stderr.getvalue()


def test_import_needs_a_source(capsys):
    assert "required: <cloudstack-vm>" in parse_error(
        migration.ImportMigration, [], capsys)


def test_import_rejects_an_unknown_mode(capsys):
    err = parse_error(migration.ImportMigration, ["web-1", "--mode", "hot"],
                      capsys)
    assert "argument --mode: invalid choice: 'hot'" in err


@pytest.mark.parametrize("option", ["--poll-interval", "--timeout"])
@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_wait_times_must_be_positive_numbers(capsys, option, value):
    err = parse_error(migration.ImportMigration, ["web-1", option, value],
                      capsys)
    assert "argument %s: invalid positive float value" % option in err


def test_list_options():
    _, args = parse(migration.ListMigration, [
        "--state", "failed", "--source", "web-1", "--host", "cmp-2",
        "--limit", "5", "--marker", "m-0", "--long"])
    assert (args.state, args.source, args.host, args.limit, args.marker,
            args.long) == ("failed", "web-1", "cmp-2", 5, "m-0", True)
    _, args = parse(migration.ListMigration, [])
    assert (args.state, args.limit, args.marker, args.long) == (
        None, None, None, False)


@pytest.mark.parametrize("argv, message", [
    (["--state", "done"], "argument --state: invalid choice: 'done'"),
    (["--limit", "0"], "argument --limit: invalid positive int value"),
])
def test_list_rejects_bad_filters(capsys, argv, message):
    assert message in parse_error(migration.ListMigration, argv, capsys)


@pytest.mark.parametrize("cls", [migration.ShowMigration,
                                 migration.CancelMigration,
                                 migration.RetryMigration,
                                 migration.CutoverMigration])
def test_migration_commands_need_an_id(capsys, cls):
    assert "required: <migration>" in parse_error(cls, [], capsys)
    _, args = parse(cls, ["m-1"])
    assert args.migration == "m-1"


def test_cancel_has_no_wait_option(capsys):
    assert "unrecognized arguments: --wait" in parse_error(
        migration.CancelMigration, ["m-1", "--wait"], capsys)


# Requests and output

def test_import_posts_and_shows_the_record(mock, app):
    mock.post(URL, status_code=202,
              json={"migration": dict(RECORD, state="queued")})
    out = run(migration.ImportMigration,
              ["web-1", "--host", "cmp-2", "--delete-source", "-f", "json"],
              app)
    req = mock.request_history[0]
    assert (req.method, req.url) == ("POST", URL)
    assert req.json() == {"migration": {"source": "web-1", "host": "cmp-2",
                                        "delete_source": True}}
    assert req.headers["X-Auth-Token"] == TOKEN
    shown = json.loads(out)
    assert shown == dict(RECORD, state="queued")
    # A cold migration has no cutover fields; nor a record without a
    # schedule the schedule fields.
    assert list(shown) == [f for f in migration.SHOW_FIELDS
                           if f not in ("cutover", "cutover_method",
                                        "start_at", "cutover_window",
                                        "aggregate")]
    assert len(mock.request_history) == 1


def test_import_table_formats_dicts(mock, app):
    mock.post(URL, status_code=202, json={"migration": RECORD})
    out = run(migration.ImportMigration, ["web-1", "--mode", "cold"], app)
    assert mock.request_history[0].json() == {
        "migration": {"source": "web-1", "mode": "cold"}}
    lines = {line.split("|")[1].strip(): line.split("|")[2].strip()
             for line in out.splitlines() if line.startswith("| ")}
    assert lines["resources"] == "host='cmp-2', image_id='img-1'"
    assert lines["state"] == "running"


def test_import_wait_success_prints_the_final_record(mock, app):
    done = dict(RECORD, state="succeeded", step="start", bytes_done=4 * GIB,
                result={"server_id": "srv-1"})
    mock.post(URL, status_code=202,
              json={"migration": dict(RECORD, state="queued", step=None,
                                      bytes_done=None, bytes_total=None)})
    mock.get(URL + "/m-1", [{"json": {"migration": RECORD}},
                            {"json": {"migration": done}}])
    t = FakeClock()
    out = run(migration.ImportMigration,
              ["web-1", "--wait", "--poll-interval", "3", "-f", "value",
               "-c", "state", "-c", "result"], app, t)
    assert out == "succeeded\n{'server_id': 'srv-1'}\n"
    assert [(r.method, r.url) for r in mock.request_history] == [
        ("POST", URL), ("GET", URL + "/m-1"), ("GET", URL + "/m-1")]
    assert t.sleeps == [3.0, 3.0]
    # StringIO is not a TTY: plain lines, one per change.
    assert app.stderr.getvalue().splitlines() == [
        "[0:00] queued",
        "[0:03] running image, 1.0 GiB / 4.0 GiB (25%), 1.0 MiB/s, "
        "ETA 51:12",
        "[0:06] succeeded start, 4.0 GiB / 4.0 GiB (100%)",
    ]


def test_import_wait_failure_raises_with_the_error(mock, app):
    mock.post(URL, status_code=202, json={"migration": RECORD})
    mock.get(URL + "/m-1", json={"migration": dict(
        RECORD, state="failed", step="boot", error="No valid host")})
    with pytest.raises(osc_exc.CommandError) as info:
        run(migration.ImportMigration, ["web-1", "--wait"], app, FakeClock())
    assert str(info.value) == "Migration m-1 failed at step boot: " \
        "No valid host"
    assert app.stdout.getvalue() == ""


def test_list_follows_pages_and_shows_progress(mock, app):
    # Host: where it landed, else where it was sent, else the resources.
    second = dict(RECORD, id="m-2", state="succeeded", source_vm_name=None,
                  source_ref="db-9", target_host="cmp-7", bytes_done=None,
                  bytes_total=None, resources=None)
    third = dict(second, id="m-3", compute_host="cmp-8")
    mock.get(URL, json={"migrations": [RECORD], "migrations_links": [
        {"rel": "next", "href": URL + "?marker=m-1"}]})
    mock.get(URL + "?marker=m-1", json={"migrations": [second, third]})
    out = run(migration.ListMigration, ["-f", "json"], app)
    assert json.loads(out) == [
        {"ID": "m-1", "Source": "web-1", "State": "running",
         "Step": "image", "Host": "cmp-2",
         "Target Project": "tp-1", "Progress": 25},
        {"ID": "m-2", "Source": "db-9", "State": "succeeded",
         "Step": "image", "Host": "cmp-7",
         "Target Project": "tp-1", "Progress": None},
        {"ID": "m-3", "Source": "db-9", "State": "succeeded",
         "Step": "image", "Host": "cmp-8",
         "Target Project": "tp-1", "Progress": None},
    ]
    assert [r.url for r in mock.request_history] == [URL,
                                                     URL + "?marker=m-1"]


def test_list_table_with_filters_and_long(mock, app):
    mock.get(URL, json={"migrations": [RECORD]})
    out = run(migration.ListMigration,
              ["--state", "running", "--limit", "10", "--long"], app)
    assert mock.request_history[0].url == URL + "?state=running&limit=10"
    header = out.splitlines()[1]
    assert [h.strip() for h in header.strip("|").split("|")] == [
        name for name, _ in migration.LIST_COLUMNS + migration.LONG_COLUMNS]
    row = [c.strip() for c in out.splitlines()[3].strip("|").split("|")]
    assert row[:9] == ["m-1", "web-1", "running", "image", "cmp-2", "tp-1",
                       "25%", "vm-uuid", "cold"]


def test_show_prints_events_in_order(mock, app):
    events = [
        {"created_at": "2025-01-01T00:00:02Z", "step": "validate",
         "kind": "end", "message": "ok"},
        {"created_at": "2025-01-01T00:00:01Z", "step": "validate",
         "kind": "start", "message": "checking"},
    ]
    mock.get(URL + "/m-1", json={"migration": dict(RECORD, events=events)})
    out = run(migration.ShowMigration, ["m-1", "-c", "events"], app)
    assert "2025-01-01T00:00:02Z validate end: ok" in out
    lines = out.splitlines()
    first = next(i for i, x in enumerate(lines) if "validate end: ok" in x)
    assert "validate start: checking" in lines[first + 1]

    app.stdout = io.StringIO()
    out = run(migration.ShowMigration, ["m-1", "-f", "json"], app)
    assert json.loads(out)["events"] == events
    assert mock.request_history[-1].headers["X-Auth-Token"] == TOKEN


def test_show_keeps_fields_a_newer_api_adds(mock, app):
    mock.get(URL + "/m-1", json={"migration": dict(RECORD, zone="az1")})
    out = run(migration.ShowMigration, ["m-1", "-f", "json"], app)
    assert list(json.loads(out))[-1] == "zone"


@pytest.mark.parametrize("cls, action", [
    (migration.CancelMigration, "cancel"),
    (migration.RetryMigration, "retry"),
    (migration.CutoverMigration, "cutover"),
])
def test_actions_post_and_show_the_result(mock, app, cls, action):
    mock.post(URL + "/m-1/action", status_code=202,
              json={"migration": dict(RECORD, state="cancelling")})
    out = run(cls, ["m-1", "-f", "value", "-c", "id", "-c", "state"], app)
    assert out == "m-1\ncancelling\n"
    req = mock.request_history[0]
    assert (req.method, req.url, req.json()) == (
        "POST", URL + "/m-1/action", {action: {}})


def test_api_error_detail_becomes_the_command_error(mock, app):
    mock.get(URL + "/nope", status_code=404, json={"errors": [{
        "status": 404, "code": "cs2os.MigrationNotFound",
        "title": "Not Found", "detail": "Migration nope could not be found.",
        "request_id": "req-1"}]})
    with pytest.raises(osc_exc.CommandError) as info:
        run(migration.ShowMigration, ["nope"], app)
    assert str(info.value) == ("Migration nope could not be found. "
                               "(HTTP 404, cs2os.MigrationNotFound, req-1)")


def test_import_sends_network_mappings_and_shows_the_nics(mock, app):
    nics = [{"cloudstack_network": "guest", "neutron_network": "private",
             "port_id": "p-0", "mac": "1e:00:00:00:00:01", "ip": "10.0.0.50",
             "cloudstack_ip": "10.0.0.50", "ip_preserved": True},
            {"cloudstack_network": "backend", "neutron_network": "private",
             "port_id": "p-1", "mac": "1e:00:00:00:00:02", "ip": "10.0.0.7",
             "cloudstack_ip": "192.168.5.7", "ip_preserved": False}]
    mock.post(URL, status_code=202, json={"migration": dict(
        RECORD, networks={"guest": "private", "backend": "private"},
        result={"nics": nics})})
    out = run(migration.ImportMigration,
              ["web-1", "--network", "guest=private", "--network",
               "backend = private", "--drop-unmapped-nics", "-c", "nics"],
              app)
    assert mock.request_history[0].json() == {"migration": {
        "source": "web-1", "networks": {"guest": "private",
                                        "backend": "private"},
        "drop_unmapped_nics": True}}
    shown = [line.split("|")[2].strip() for line in out.splitlines()
             if line.startswith("| ")][1:]
    assert shown == [
        "guest -> private port p-0 1e:00:00:00:00:01 10.0.0.50",
        "backend -> private port p-1 1e:00:00:00:00:02 10.0.0.7 "
        "(was 192.168.5.7: not in the network's subnets)"]


@pytest.mark.parametrize("bad", ["guest", "=private", "guest="])
def test_import_rejects_a_malformed_network_mapping(app, bad):
    cmd = migration.ImportMigration(app, None)
    parser = cmd.get_parser("openstack cs2os import")
    with pytest.raises(SystemExit):
        parser.parse_args(["web-1", "--network", bad])
