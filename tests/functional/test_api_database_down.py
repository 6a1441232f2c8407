"""A conductor whose database went away: cs2os-api answers 503 "retry
later", naming the cause, not 500 with an internal error.

Real parts: PostgreSQL (a private cluster), a cs2os-conductor process on
it, RabbitMQ, a cs2os-api process.  The database is stopped under the
running conductor, as a failed-over or restarting database server is.
"""

import os

import pytest
import requests

from tools.testbed import api_process
from tools.testbed import conductor_process
from tools.testbed import harness
from tools.testbed import postgres

NAME = "cs2os-dbdown-%s" % harness.RUN_ID


@pytest.fixture(scope="module")
def cluster(workdir):
    path = os.path.join(workdir, "dbdown")
    os.makedirs(path)
    pg = postgres.PostgresCluster(path)
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def api(workdir, services, cluster):
    conductor = conductor_process.ConductorProcess(
        workdir, "%s-conductor" % NAME, harness.TRANSPORT_URL,
        services["exchange"], cluster.create_database("dbdown"),
        "notifications-%s" % NAME)
    conductor.manage("db", "sync")
    conductor.start()
    proc = api_process.ApiProcess(workdir, "%s-api" % NAME,
                                  harness.TRANSPORT_URL, services["exchange"])
    proc.start()
    yield proc
    proc.stop()
    conductor.stop()


def test_a_stopped_database_is_503_and_names_the_cause(api, cluster):
    url = api.url + "/v1/migrations"
    assert requests.get(url, timeout=30).status_code == 200

    cluster.stop()
    resp = requests.get(url, timeout=30)

    assert resp.status_code == 503, resp.text
    err = resp.json()["errors"][0]
    assert err["code"] == "cs2os.DatabaseUnavailable"
    assert "could not reach its database" in err["detail"]
    assert "dbdown" not in resp.text  # no socket path, no DSN
    assert resp.headers["Retry-After"] == "5"
