import types

import oslo_messaging as messaging
import pytest
from oslo_config import cfg
from oslo_messaging import conffixture

from cs2os_agent.common import context
from cs2os_agent.common import exception
from cs2os_agent.common import rpc
from cs2os_agent.conductor import manager
from cs2os_agent.conductor import request
from cs2os_agent.conductor import rpcapi


class Engine:
    def __init__(self):
        self.submitted = []
        self.cancelled = []

    def submit(self, mid):
        self.submitted.append(mid)

    def cancel(self, mid):
        self.cancelled.append(mid)


class Agent:
    def __init__(self):
        self.cancels = []

    def cancel(self, ctxt, host, mid):
        self.cancels.append((host, mid))


@pytest.fixture
def mgr(db):
    return manager.ConductorManager(db, Engine(), agent_api=Agent())


CTXT = context.RequestContext(user_id="alice", project_id="p1")


def test_create_records_the_request_and_its_requester(mgr):
    m = mgr.create_migration(CTXT, {"source": " vm-1 ", "host": "cmp1",
                                    "delete_source": True})
    assert (m["state"], m["step"]) == ("queued", "validate")
    assert (m["source_ref"], m["target_host"]) == ("vm-1", "cmp1")
    assert m["delete_source"] is True and m["mode"] == "cold"
    assert (m["user_id"], m["project_id"]) == ("alice", "p1")
    assert mgr.engine.submitted == [m["id"]]


@pytest.mark.parametrize("bad, words", [
    ({}, "source"),
    ({"source": "vm", "mode": "hot"}, "mode hot is not supported"),
    ({"source": "vm", "mode": "warm", "cutover": "later"},
     "cutover later is not supported"),
    ({"source": "vm", "cutover": "manual"}, "warm migrations only"),
    ({"source": "vm", "mode": "warm", "cutover_method": "reboot"},
     "cutover method reboot is not supported; supported: shutdown, force"),
    ({"source": "vm", "cutover_method": "force"},
     "cutover_method applies to warm migrations only (mode is cold)"),
    ({"source": "vm", "mode": "cold", "cutover_method": "shutdown"},
     "cutover_method applies to warm migrations only (mode is cold)"),
    ({"source": "vm", "mode": "warm", "cutover_method": True},
     "cutover_method must be a str"),
    ({"source": "vm", "colour": "red"}, "unknown field(s) colour"),
    ({"source": "vm", "delete_source": "yes"}, "delete_source must be"),
    ("vm", "must be a dict"),
])
def test_bad_requests_name_the_problem(bad, words):
    with pytest.raises(exception.Invalid) as err:
        request.validate(bad)
    assert words in str(err.value)


def test_cancel_queued_is_immediate(mgr):
    m = mgr.create_migration(CTXT, {"source": "vm"})
    done = mgr.cancel_migration(CTXT, m["id"])
    assert done["state"] == "cancelled"
    assert mgr.engine.cancelled == []


def test_cancel_during_sync_reaches_the_agent(mgr):
    m = mgr.create_migration(CTXT, {"source": "vm"})
    mgr.db.update_migration(m["id"], {"state": "running", "step": "sync",
                                      "resources": {"host": "cmp1"}})
    done = mgr.cancel_migration(CTXT, m["id"])
    assert done["state"] == "cancelling"
    assert mgr.engine.cancelled == [m["id"]]
    assert mgr.agent_api.cancels == [("cmp1", m["id"])]


def test_finished_migrations_cannot_be_cancelled(mgr):
    m = mgr.create_migration(CTXT, {"source": "vm"})
    mgr.db.update_migration(m["id"], {"state": "succeeded"})
    with pytest.raises(exception.MigrationStateConflict, match="succeeded"):
        mgr.cancel_migration(CTXT, m["id"])


def test_retry_only_failed_or_cancelled(mgr):
    m = mgr.create_migration(CTXT, {"source": "vm"})
    with pytest.raises(exception.MigrationStateConflict, match="queued"):
        mgr.retry_migration(CTXT, m["id"])
    mgr.db.update_migration(m["id"], {"state": "failed", "step": "sync",
                                      "error": "boom"})
    again = mgr.retry_migration(CTXT, m["id"])
    assert (again["state"], again["step"], again["error"]) == (
        "queued", "validate", None)
    assert mgr.engine.submitted == [m["id"], m["id"]]
    assert again["events"][-1]["message"] == "retry requested by alice"


def test_progress_reports_update_the_record(mgr):
    m = mgr.create_migration(CTXT, {"source": "vm"})
    mgr.report_progress(CTXT, m["id"], {"bytes_done": 5, "bytes_total": 9,
                                        "rate_bps": 3})
    got = mgr.get_migration(CTXT, m["id"])
    assert (got["bytes_done"], got["bytes_total"], got["rate_bps"]) == (
        5, 9, 3)
    mgr.report_progress(CTXT, "unknown", {"bytes_done": 1,
                                          "bytes_total": 1, "rate_bps": 1})


def test_list_limit_bounds(mgr):
    with pytest.raises(exception.Invalid, match="limit"):
        mgr.list_migrations(CTXT, limit=0)


# -- the cutover method ---------------------------------------------------


def test_the_request_defaults_a_warm_cutover_method_to_shutdown():
    assert request.validate({"source": "vm", "mode": "warm"})[
        "cutover_method"] == "shutdown"
    assert request.validate({"source": "vm", "mode": "warm",
                             "cutover_method": "force"})[
        "cutover_method"] == "force"
    assert "cutover_method" not in request.validate({"source": "vm"})


@pytest.mark.parametrize("req, options", [
    ({"mode": "warm"}, {"cutover": "auto", "cutover_method": "shutdown"}),
    ({"mode": "warm", "cutover": "manual", "cutover_method": "force"},
     {"cutover": "manual", "cutover_method": "force"}),
    ({}, {}),
])
def test_create_records_the_cutover_method(mgr, req, options):
    m = mgr.create_migration(CTXT, dict(req, source="vm"))
    got = {k: v for k, v in m["options"].items()
           if k in ("cutover", "cutover_method")}
    assert got == options


def _held(mgr, **request_):
    m = mgr.create_migration(CTXT, dict({"source": "vm", "mode": "warm",
                                         "cutover": "manual"}, **request_))
    mgr.db.update_migration(m["id"], {"state": "running", "step": "ready"})
    return m["id"]


def _cutover_events(mgr, mid):
    return [e["message"] for e in mgr.db.get_migration(mid)["events"]
            if e["step"] == "cutover"]


def test_cutover_action_records_its_method_and_a_change_of_it(mgr):
    mid = _held(mgr)
    first = mgr.cutover_migration(CTXT, mid)
    assert "method" not in first["options"]["cutover_requested"]
    forced = mgr.cutover_migration(CTXT, mid, "force")
    requested = forced["options"]["cutover_requested"]
    assert (requested["by"], requested["method"]) == ("alice", "force")
    # The same method again changes nothing; no method keeps it.
    assert mgr.cutover_migration(CTXT, mid, "force")["options"][
        "cutover_requested"] == requested
    assert mgr.cutover_migration(CTXT, mid)["options"][
        "cutover_requested"] == requested
    bob = context.RequestContext(user_id="bob", project_id="p1")
    back = mgr.cutover_migration(bob, mid, "shutdown")
    assert (back["options"]["cutover_requested"]["by"],
            back["options"]["cutover_requested"]["method"]) == (
        "bob", "shutdown")
    # The request's own method is kept apart.
    assert back["options"]["cutover_method"] == "shutdown"
    assert _cutover_events(mgr, mid) == [
        "cutover requested by alice", "cutover (force) requested by alice",
        "cutover (shutdown) requested by bob"]


def test_cutover_action_refuses_an_unknown_method_first(mgr):
    mid = _held(mgr)
    with pytest.raises(exception.Invalid, match="cutover method reboot is "
                       "not supported; supported: shutdown, force"):
        mgr.cutover_migration(CTXT, mid, "reboot")
    assert "cutover_requested" not in mgr.db.get_migration(mid)["options"]
    assert _cutover_events(mgr, mid) == []
    # Even before the migration's state is looked at.
    cold = mgr.create_migration(CTXT, {"source": "vm"})
    with pytest.raises(exception.Invalid):
        mgr.cutover_migration(CTXT, cold["id"], "")


def test_cutover_method_cannot_change_once_the_cutover_began(mgr):
    mid = _held(mgr, cutover_method="force")
    mgr.db.update_migration(mid, {"step": "cutover"})
    with pytest.raises(exception.MigrationStateConflict,
                       match="at step cutover"):
        mgr.cutover_migration(CTXT, mid, "shutdown")
    assert "cutover_requested" not in mgr.db.get_migration(mid)["options"]


# The warm flow's steps, spelled out: the wire values the API shows.
BEFORE_CUTOVER = ("validate", "image", "ports", "boot", "mirror", "ready")
FROM_CUTOVER = ("cutover", "finish", "swap", "start", "stop_source",
                "cleanup", "retire_source", "done")


@pytest.mark.parametrize("step", BEFORE_CUTOVER + FROM_CUTOVER)
def test_a_cutover_is_taken_until_the_cutover_step(mgr, step):
    mid = _held(mgr)
    mgr.db.update_migration(mid, {"step": step})
    if step in BEFORE_CUTOVER:
        assert mgr.cutover_migration(CTXT, mid)["options"][
            "cutover_requested"]["by"] == "alice"
        return
    with pytest.raises(exception.MigrationStateConflict,
                       match="running at step %s: cannot cut over" % step):
        mgr.cutover_migration(CTXT, mid)


def test_retry_forgets_the_actions_method_not_the_requests(mgr):
    mid = _held(mgr, cutover_method="force")
    mgr.cutover_migration(CTXT, mid, "shutdown")
    mgr.db.update_migration(mid, {"state": "failed"})
    options = mgr.retry_migration(CTXT, mid)["options"]
    assert "cutover_requested" not in options
    assert options["cutover_method"] == "force"


class RecordingClient:
    """oslo.messaging's RPCClient as ConductorAPI uses it."""

    def __init__(self):
        self.calls = []

    def prepare(self, version=None, timeout=None):
        def call(ctxt, method, **kwargs):
            self.calls.append((version, method, kwargs))
            return {"id": kwargs.get("migration_id")}
        return types.SimpleNamespace(call=call)


@pytest.fixture
def recording_api():
    api_ = rpcapi.ConductorAPI.__new__(rpcapi.ConductorAPI)
    api_.client, api_.timeout = RecordingClient(), None
    return api_


def test_rpc_cutover_sends_1_1_without_a_method_and_1_2_with_one(
        recording_api):
    recording_api.cutover_migration(CTXT, "m-1")
    recording_api.cutover_migration(CTXT, "m-1", method="force")
    recording_api.cutover_migration(CTXT, "m-1", "shutdown")
    # A 1.1 conductor still takes the call without a method.
    assert recording_api.client.calls == [
        ("1.1", "cutover_migration", {"migration_id": "m-1"}),
        ("1.2", "cutover_migration", {"migration_id": "m-1",
                                      "cutover_method": "force"}),
        ("1.2", "cutover_migration", {"migration_id": "m-1",
                                      "cutover_method": "shutdown"})]
    assert rpcapi.RPC_API_VERSION == "1.2"
    assert manager.ConductorManager.target.version == "1.2"


@pytest.fixture
def conductor_api(mgr):
    """ConductorAPI -> oslo.messaging (its in-process fake driver) ->
    the RPC server's dispatcher -> ``mgr``: what goes on the wire."""
    conf = cfg.ConfigOpts()
    conf([], project="cs2os", default_config_files=[])
    conf_fixture = conffixture.ConfFixture(conf)
    conf_fixture.setUp()
    saved = rpc.TRANSPORT
    rpc.TRANSPORT = messaging.get_rpc_transport(
        conf, url="fake:/", allowed_remote_exmods=rpc.ALLOWED_EXMODS)
    server = rpc.get_server(messaging.Target(topic=rpcapi.TOPIC,
                                             server="ctl-1"), [mgr])
    server.start()
    try:
        yield rpcapi.ConductorAPI(timeout=10)
    finally:
        server.stop()
        server.wait()
        rpc.TRANSPORT.cleanup()
        rpc.TRANSPORT = saved
        conf_fixture.cleanUp()


def test_rpc_cutover_with_a_method_reaches_the_conductor(mgr, conductor_api):
    mid = _held(mgr)
    record = conductor_api.cutover_migration(CTXT, mid)
    assert "method" not in record["options"]["cutover_requested"]
    record = conductor_api.cutover_migration(CTXT, mid, method="force")
    assert record["options"]["cutover_requested"]["method"] == "force"
    assert record["options"]["cutover_requested"]["by"] == "alice"
    # The conductor's verdicts come back as themselves.
    with pytest.raises(exception.Invalid, match="cutover method reboot"):
        conductor_api.cutover_migration(CTXT, mid, method="reboot")
    created = conductor_api.create_migration(CTXT, {
        "source": "vm", "mode": "warm", "cutover_method": "force"})
    assert created["options"]["cutover_method"] == "force"
