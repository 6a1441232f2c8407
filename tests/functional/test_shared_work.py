"""Two real cs2os-conductor processes on one PostgreSQL share queued work.

Queued migrations nobody received (rows written straight into the
database, as a conductor that records work it has no free worker for
leaves them; all due at one start_at a few seconds ahead, which no
conductor claims before) are claimed by whichever conductor has a free
worker: its
engine looks for them every few seconds and whenever one of its own
migrations ends (conductor/engine.py).  Each migration is claimed once
(lease epoch 1, no takeover) and run by that one conductor; both
conductors run some.  The CloudStack stand-in knows none of the VMs, so
each run ends quickly, failed, with an error naming its VM: what matters
here is who ran it and how often.
"""

import datetime
import time
import uuid

import pytest

from cs2os_agent.conductor import schedule
from cs2os_agent.db import api as db_api

# The PostgreSQL the database tests start (a fixture, taken by name).
from tests.functional.test_database import pg_cluster  # noqa: F401
from tools.testbed import conductor_process
from tools.testbed import harness

RUN_ID = harness.RUN_ID
QUEUED = 16


@pytest.fixture(scope="module")
def db_url(pg_cluster):  # noqa: F811
    return pg_cluster.create_database("shared_%s" % uuid.uuid4().hex[:10])


@pytest.fixture(scope="module")
def conductors(workdir, services, cloud, db_url):
    procs = []
    for letter in ("a", "b"):
        procs.append(conductor_process.ConductorProcess(
            workdir, "cs2os-shared-%s-%s" % (RUN_ID, letter),
            harness.TRANSPORT_URL, services["exchange"], db_url,
            "notifications-shared-%s" % RUN_ID, lease_seconds=30,
            sections={"cloudstack": {"endpoint": cloud.endpoint,
                                     "api_key": cloud.admin.apikey,
                                     "secret_key": cloud.admin.secretkey,
                                     "job_poll_interval": 0.2}}))
    procs[0].manage("db", "sync")
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def test_queued_work_is_shared_and_each_migration_runs_once(conductors,
                                                            db_url):
    db = db_api.Database(db_url)
    # All due at one moment a few seconds ahead: both conductors' polls
    # see them waiting (and skip them) first, so both are ready to claim
    # when they come due; else the first poll could take and finish all
    # of them (each fails in well under a second) before the other looks.
    start_at = schedule.iso(schedule.now() + datetime.timedelta(seconds=6))
    ids = []
    for n in range(QUEUED):
        ids.append(db.create_migration({
            "id": "shared-%s-%02d" % (RUN_ID, n),
            "source_ref": "shared-vm-%02d" % n, "state": "queued",
            "step": "validate", "options": {"start_at": start_at},
            "source": {}, "resources": {}, "result": {}})["id"])
    time.sleep(3)
    assert {db.get_migration(mid)["conductor"] for mid in ids} == {None}
    deadline = time.monotonic() + 120
    while True:
        rows = [db.get_migration(mid) for mid in ids]
        if all(r["state"] == "failed" for r in rows):
            break
        assert time.monotonic() < deadline, [
            (r["id"], r["state"], r["conductor"]) for r in rows]
        time.sleep(0.5)
    hosts = {proc.host for proc in conductors}
    for row in rows:
        # Claimed once, by one of them, and run by it to its end.
        assert (row["conductor"] in hosts, row["lease_epoch"]) == \
            (True, 1), row
        assert "shared-vm-" in row["error"], row["error"]
    ran = {host: sum(r["conductor"] == host for r in rows)
           for host in hosts}
    assert all(ran.values()), ran
    db.engine.dispose()
