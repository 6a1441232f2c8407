"""cs2os-conductor owns its SQLite database (db/sqlite_owner.py), as real
processes: a second conductor on the same file refuses to start and names
the first; cs2os-manage reads the file beside it; once the first is gone,
even by SIGKILL, another one starts.  On PostgreSQL two conductors run
side by side."""

import os

import pytest

from cs2os_agent.common import context as cs2os_context
from cs2os_agent.conductor import rpcapi as conductor_rpcapi
from cs2os_agent.db import migration as db_migration
from tests.functional.test_database import pg_cluster  # noqa: F401
from tools.testbed import conductor_process
from tools.testbed import harness

RUN_ID = harness.RUN_ID


@pytest.fixture(scope="module")
def conductor_api(services):
    return conductor_rpcapi.ConductorAPI()


@pytest.fixture
def make(workdir, services, cloud):
    """make(name, db_url): a ConductorProcess, stopped after the test."""
    made = []

    def make_(name, db_url):
        proc = conductor_process.ConductorProcess(
            workdir, "cs2os-owner-%s-%s" % (RUN_ID, name),
            harness.TRANSPORT_URL, services["exchange"], db_url,
            "notifications-owner-%s" % RUN_ID,
            sections={"cloudstack": {"endpoint": cloud.endpoint,
                                     "api_key": cloud.admin.apikey,
                                     "secret_key": cloud.admin.secretkey}})
        made.append(proc)
        return proc

    yield make_
    for proc in made:
        proc.stop()


def test_a_second_conductor_on_one_sqlite_file_refuses_to_start(
        workdir, make, conductor_api):
    ctxt = cs2os_context.get_admin_context()
    path = os.path.join(workdir, "owned-%s.sqlite" % RUN_ID)
    first = make("a", "sqlite:///%s" % path)
    second = make("b", "sqlite:///%s" % path)
    first.manage("db", "sync")
    first.start()

    second.launch()
    assert second.proc.wait(60) == 1
    assert ("another cs2os-conductor (pid %d) owns SQLite database %s; "
            "several conductors need MySQL/MariaDB or PostgreSQL: set "
            "[database] connection" % (first.proc.pid, path)) \
        in second.log()
    # The first goes on, and the file is open to cs2os-manage beside it.
    assert first.proc.poll() is None
    assert conductor_api.list_migrations(ctxt, limit=1) == []
    head = db_migration.head_version()
    assert second.manage("db", "version").strip() == \
        "current: %s, latest: %s" % (head, head)

    # The kernel lets go of the lock with the process, however it ends.
    first.kill()
    second.start()
    assert second.proc.poll() is None
    with open(path + ".conductor-lock") as f:
        assert f.read() == "%d\n" % second.proc.pid


def test_two_conductors_share_a_postgresql_database(
        make, conductor_api, pg_cluster):  # noqa: F811
    ctxt = cs2os_context.get_admin_context()
    url = pg_cluster.create_database("owner_%s" % RUN_ID.replace("-", "_"))
    procs = [make("pg-%s" % n, url) for n in ("a", "b")]
    procs[0].manage("db", "sync")
    for proc in procs:
        proc.launch()
    for proc in procs:
        # Its own readiness: either one may answer an RPC call.
        harness.wait_for(lambda p=proc: _serving_or_gone(p), 60,
                         "%s serving" % proc.name)
        assert proc.proc.poll() is None, proc.log()
    assert conductor_api.list_migrations(ctxt, limit=1) == []


def _serving_or_gone(proc):
    return proc.proc.poll() is not None or (
        os.path.exists(proc.log_file)
        and "Serving topic cs2os-conductor" in proc.log())
