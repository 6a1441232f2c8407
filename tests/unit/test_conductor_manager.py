import pytest

from cs2os_agent.common import context
from cs2os_agent.common import exception
from cs2os_agent.conductor import manager
from cs2os_agent.conductor import request
from cs2os_agent.db import api
from cs2os_agent.db import migration


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
def mgr(tmp_path):
    db = api.Database("sqlite:///%s" % (tmp_path / "c.sqlite"))
    migration.upgrade(db)
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
