"""A real cs2os-conductor's Prometheus endpoint ([conductor] metrics_listen)
on a real PostgreSQL: scraped over HTTP, its counts are the database's own
GROUP BY; a database error fails the scrape, not the conductor; the port
closes when the conductor stops.  Real RabbitMQ and the CloudStack API
stand-in, as for tests/functional/test_conductor.py.
"""

import datetime
import socket
import urllib.error
import urllib.request
import uuid

import pytest
import sqlalchemy as sa
from prometheus_client import parser

from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import states
from cs2os_agent.conductor import rpcapi as conductor_rpcapi
from cs2os_agent.db import api as db_api
from cs2os_agent.db import metrics as db_metrics
from cs2os_agent.db import models
from cs2os_agent.db import plans as plan_db
from tests.functional.test_database import database  # noqa: F401
from tests.functional.test_database import mariadb_server  # noqa: F401
from tests.functional.test_database import pg_cluster  # noqa: F401
from tools.testbed import conductor_process
from tools.testbed import harness
from tools.testbed import process
from tools.testbed.harness import wait_state

RUN_ID = harness.RUN_ID
WORKERS = 3


@pytest.fixture(scope="module")
def conductor_api(services):
    return conductor_rpcapi.ConductorAPI()


@pytest.fixture(scope="module")
def db_url(pg_cluster):  # noqa: F811
    return pg_cluster.create_database("metrics_%s" % uuid.uuid4().hex[:10])


@pytest.fixture(scope="module")
def port():
    return process.free_port()


def _conductor(workdir, services, cloud, db_url, name, port):
    return conductor_process.ConductorProcess(
        workdir, "cs2os-metrics-%s-%s" % (RUN_ID, name),
        harness.TRANSPORT_URL, services["exchange"], db_url,
        "notifications-metrics-%s" % RUN_ID,
        sections={"cloudstack": {"endpoint": cloud.endpoint,
                                 "api_key": cloud.admin.apikey,
                                 "secret_key": cloud.admin.secretkey,
                                 "job_poll_interval": 0.2},
                  "conductor": {"metrics_listen": "127.0.0.1:%d" % port,
                                "workers": WORKERS}})


@pytest.fixture(scope="module")
def conductor(workdir, services, cloud, conductor_api, db_url, port):
    proc = _conductor(workdir, services, cloud, db_url, "conductor", port)
    proc.manage("db", "sync")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def db(db_url):
    opened = db_api.Database(db_url)
    yield opened
    opened.engine.dispose()


@pytest.fixture
def ctxt():
    return cs2os_context.RequestContext(user_id="operator",
                                        project_id="admin-project")


def scrape(port):
    """(HTTP status, {(sample name, labels tuple): value})."""
    url = "http://127.0.0.1:%d/metrics" % port
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            status, text = answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    samples = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return status, samples


def labelled(samples, name, label):
    return {dict(labels)[label]: value
            for (sample, labels), value in samples.items()
            if sample == name}


def _insert(db, state, n, bytes_done=0, result=None):
    """A migration row in ``state`` that another (live) conductor holds, so
    this one leaves it where it is; ``result`` names its copies."""
    mid = "%s-%02d-%s" % (state, n, RUN_ID)
    now = models.utcnow()
    db.create_migration({
        "id": mid, "source_ref": "vm-%s" % mid, "state": state,
        "step": "validate", "options": {}, "source": {}, "resources": {},
        "result": result or {}, "conductor": "another-conductor",
        "lease_until": now + datetime.timedelta(days=1),
        "bytes_done": bytes_done})
    return mid


def _group_by(db):
    """The database's own answer, asked independently of cs2os's code."""
    with db.engine.connect() as conn:
        migrations = dict(conn.execute(sa.text(
            "SELECT state, count(*) FROM migrations GROUP BY state")).all())
        plans = dict(conn.execute(sa.text(
            "SELECT state, count(*) FROM plans GROUP BY state")).all())
        moved = conn.execute(sa.text(
            "SELECT sum(bytes_moved) FROM migrations")).scalar()
        resources = conn.execute(sa.text(
            "SELECT resource FROM slots")).scalars().all()
    kinds = [r.split(":")[0] for r in resources if not r.startswith("plan:")]
    return migrations, plans, int(moved), {
        k: kinds.count(k) for k in ("all", "compute", "kvm", "pool")}


def test_the_scrape_is_the_databases_group_by(conductor, conductor_api,
                                              ctxt, db, port):
    # Rows in several states (one is the conductor's own doing: a
    # migration of a VM CloudStack does not have ends failed), two plans,
    # slots held by a running migration.  Their copies as the flow
    # records them: a cold migration's template upload, root copy and two
    # data disks; a warm one's mirror (its sync staged what the mirror
    # moved: not again); a running one's template; a cancelled one's
    # template and root copy.  bytes_done (the last copy's progress)
    # counts for nothing.
    cold = {"template_bytes_moved": 10 * 2**30,
            "sync": {"bytes_copied": 3 * 2**30 + 17},
            "data_disks": [{"bytes_copied": 2**30}, {"bytes_copied": 5}]}
    warm = {"template_bytes_moved": 0, "mirror": {"bytes": 7 * 2**30},
            "sync": {"bytes_copied": 6 * 2**30,
                     "source": {"transport": "mirror"}}}
    cancelled = {"template_bytes_moved": 100, "sync": {"bytes_copied": 2**20}}
    _insert(db, states.SUCCEEDED, 0, bytes_done=5, result=cold)
    _insert(db, states.SUCCEEDED, 1, bytes_done=7 * 2**30, result=warm)
    _insert(db, states.QUEUED, 0)
    running = _insert(db, states.RUNNING, 0, bytes_done=999,
                      result={"template_bytes_moved": 999})
    _insert(db, states.CANCELLED, 0, bytes_done=5, result=cancelled)
    expected = (10 * 2**30 + 3 * 2**30 + 17 + 2**30 + 5  # cold
                + 7 * 2**30  # warm
                + 999  # running
                + 100 + 2**20)  # cancelled
    assert db.acquire_slots(running, {"all": 4, "compute:c1": 2,
                                      "kvm:k1": 2, "pool:p1": 2,
                                      "plan:p/all": 1}) is None
    for name, state in (("w1", "draft"), ("w2", "done"), ("w3", "done")):
        plan_db.create(db, {"id": str(uuid.uuid4()), "name": name,
                            "state": state, "defaults": {}, "items": []})
    created = conductor_api.create_migration(
        ctxt, {"source": "no-such-vm-%s" % RUN_ID})
    wait_state(conductor_api, ctxt, created["id"], ("failed",))

    status, samples = scrape(port)
    migrations, plans, moved, slots = _group_by(db)

    assert status == 200
    assert migrations == {"succeeded": 2, "queued": 1, "running": 1,
                          "cancelled": 1, "failed": 1}
    assert labelled(samples, "cs2os_migrations", "state") == {
        state: migrations.get(state, 0) for state in states.ALL}
    assert labelled(samples, "cs2os_plans", "state") == {
        state: plans.get(state, 0)
        for state in ("draft", "running", "done", "cancelled")}
    assert samples[("cs2os_migration_bytes_moved_total", ())] == moved == \
        expected
    assert labelled(samples, "cs2os_slots_held", "kind") == slots == {
        "all": 1, "compute": 1, "kvm": 1, "pool": 1}
    name = (("conductor", conductor.host),)
    assert samples[("cs2os_conductor_workers", name)] == WORKERS
    # Its one migration has ended: no worker is taken.
    assert samples[("cs2os_conductor_workers_busy", name)] == 0

    # Read at scrape time: a change in the database shows at the next
    # (the running one's root copy recorded as it ends).
    db.update_migration(running, {
        "state": states.SUCCEEDED,
        "result": {"template_bytes_moved": 999,
                   "sync": {"bytes_copied": 1000}}})
    _status, again = scrape(port)
    assert labelled(again, "cs2os_migrations", "state")["running"] == 0
    assert labelled(again, "cs2os_migrations", "state")["succeeded"] == 3
    assert again[("cs2os_migration_bytes_moved_total", ())] == \
        expected + 1000
    # A final state frees its slots (db.api.update_migration).
    assert set(labelled(again, "cs2os_slots_held", "kind").values()) == {0}


def test_a_database_error_fails_the_scrape_not_the_conductor(
        conductor, conductor_api, ctxt, db, port):
    with db.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE plans RENAME TO plans_away"))
    try:
        status, samples = scrape(port)
        assert (status, samples) == (500, {})
        # Still serving RPC, and the next scrape is answered once the
        # database is back.
        assert conductor.proc.poll() is None
        conductor_api.list_migrations(ctxt, limit=1)
    finally:
        with db.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE plans_away RENAME TO plans"))
    assert scrape(port)[0] == 200
    said = [x for x in conductor.log().splitlines()
            if "Metrics scrape failed" in x]
    # One line naming the problem; not the SQL, not the database URL.
    assert len(said) == 1
    assert said[0].endswith("the database did not answer: DBError: "
                            "(psycopg2.errors.UndefinedTable) relation "
                            "\"plans\" does not exist"), said
    assert "SELECT" not in said[0] and "postgresql" not in said[0]


def test_a_taken_port_stops_a_second_conductor_at_start(
        conductor, workdir, services, cloud, db_url, port):
    second = _conductor(workdir, services, cloud, db_url, "second", port)
    second.launch()
    try:
        assert second.proc.wait(timeout=60) == 1
    finally:
        second.stop()
    assert "Cannot serve metrics on [conductor] metrics_listen = " \
        "127.0.0.1:%d" % port in second.log()
    # The first one still serves.
    assert scrape(port)[0] == 200


def test_the_port_closes_when_the_conductor_stops(conductor, port):
    assert scrape(port)[0] == 200
    conductor.stop()
    assert "Stopped serving metrics on 127.0.0.1:%d" % port in \
        conductor.log()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_the_aggregates_on_every_backend(database):  # noqa: F811
    # SQLite, PostgreSQL and MariaDB each type a SUM their own way
    # (MySQL: DECIMAL); the figures are plain ints on all three.
    _insert(database, states.SUCCEEDED, 0, result={
        "template_bytes_moved": 2**40, "sync": {"bytes_copied": 1}})
    _insert(database, states.FAILED, 1, result={
        "data_disks": [{"bytes_copied": 2**32}, {"bytes_copied": 2**32}]})
    running = _insert(database, states.RUNNING, 0)
    assert database.acquire_slots(running, {
        "all": 1, "compute:c": 1, "pool:p": 1, "plan:x/all": 1}) is None
    got = db_metrics.figures(database)
    assert got == {"migrations": {"succeeded": 1, "failed": 1,
                                  "running": 1},
                   "bytes_moved": 2**40 + 2**33 + 1, "plans": {},
                   "slots": {"all": 1, "compute": 1, "kvm": 0, "pool": 1}}
    assert {type(v) for part in ("migrations", "slots")
            for v in got[part].values()} | {type(got["bytes_moved"])} == \
        {int}
