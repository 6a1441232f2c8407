"""The conductor's Prometheus metrics: the collector's exposition text
(fake figures, and the real SQLite database), the aggregate queries, the
listen address; no socket (tests/functional/test_metrics.py serves it)."""

import datetime
import logging

import prometheus_client
import pytest
import sqlalchemy as sa
from prometheus_client import parser

from cs2os_agent.common import states
from cs2os_agent.conductor import engine as conductor_engine
from cs2os_agent.conductor import metrics
from cs2os_agent.db import metrics as db_metrics
from cs2os_agent.db import models
from cs2os_agent.db import plans as plan_db

NOW = datetime.datetime(2026, 12, 7, 5, 0, 0)


class FakeEngine:
    workers = 4

    def __init__(self, busy=0):
        self._busy = busy

    def busy(self):
        return self._busy


def scrape(collector):
    """{(metric family, sample name): {labels tuple: value}} of the text
    a scrape gets."""
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = prometheus_client.generate_latest(registry).decode()
    out = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            key = (family.type, sample.name)
            out.setdefault(key, {})[tuple(sorted(sample.labels.items()))] \
                = sample.value
    return out


def by(out, kind, name, label):
    return {dict(labels)[label]: value
            for labels, value in out[(kind, name)].items()}


@pytest.fixture
def fake_figures(monkeypatch):
    figures = {"migrations": {"running": 2, "succeeded": 5, "odd": 1},
               "bytes_moved": 123456789,
               "plans": {"done": 1},
               "slots": {"all": 2, "compute": 1, "kvm": 0, "pool": 0}}
    monkeypatch.setattr(db_metrics, "figures", lambda db: figures)
    return figures


def test_every_state_is_present_zero_filled(fake_figures):
    out = scrape(metrics.Collector(object(), FakeEngine(3), "cond-1"))
    migrations = by(out, "gauge", "cs2os_migrations", "state")
    # Each known state, in states.ALL, then whatever else the rows hold.
    assert migrations == dict({s: 0.0 for s in states.ALL},
                              running=2.0, succeeded=5.0, odd=1.0)
    assert by(out, "gauge", "cs2os_plans", "state") == {
        "draft": 0.0, "running": 0.0, "done": 1.0, "cancelled": 0.0}
    assert by(out, "gauge", "cs2os_slots_held", "kind") == {
        "all": 2.0, "compute": 1.0, "kvm": 0.0, "pool": 0.0}


def test_bytes_moved_is_a_counter_and_workers_name_the_conductor(
        fake_figures):
    out = scrape(metrics.Collector(object(), FakeEngine(3), "cond-1"))
    assert out[("counter", "cs2os_migration_bytes_moved_total")] == {
        (): 123456789.0}
    assert out[("gauge", "cs2os_conductor_workers")] == {
        (("conductor", "cond-1"),): 4.0}
    assert out[("gauge", "cs2os_conductor_workers_busy")] == {
        (("conductor", "cond-1"),): 3.0}


def test_a_scrape_reads_the_database_each_time(fake_figures):
    collector = metrics.Collector(object(), FakeEngine(), "c")
    first = scrape(collector)
    fake_figures["migrations"]["running"] = 7
    second = scrape(collector)
    assert by(first, "gauge", "cs2os_migrations", "state")["running"] == 2
    assert by(second, "gauge", "cs2os_migrations", "state")["running"] == 7


def test_a_database_error_fails_the_scrape_with_one_log_line(
        monkeypatch, caplog):
    def broken(db):
        raise RuntimeError("connection refused\nSQL: SELECT secret")
    monkeypatch.setattr(db_metrics, "figures", broken)
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    # Registering reads nothing (describe() is empty): a database down
    # at the conductor's start does not stop it.
    registry.register(metrics.Collector(object(), FakeEngine(), "c"))
    with caplog.at_level(logging.ERROR, logger=metrics.__name__):
        with pytest.raises(metrics.ScrapeFailed):
            prometheus_client.generate_latest(registry)
    assert [r.getMessage() for r in caplog.records] == [
        "Metrics scrape failed, the database did not answer: "
        "RuntimeError: connection refused"]


# -- the aggregate queries, on the real SQLite database ---------------------

def _migration(db, n, state, moved=0, bytes_done=0):
    """A row whose result names ``moved`` bytes: a template upload and a
    root copy, or (a list) one data disk per figure."""
    if isinstance(moved, list):
        result = {"data_disks": [{"bytes_copied": b} for b in moved]}
    else:
        result = {"template_bytes_moved": moved // 2,
                  "sync": {"bytes_copied": moved - moved // 2}}
    db.create_migration({
        "id": "m-%02d" % n, "source_ref": "vm-%d" % n, "state": state,
        "step": "validate", "options": {}, "source": {}, "resources": {},
        "result": result, "created_at": NOW + datetime.timedelta(seconds=n)})
    # bytes_done (the last copy's progress) counts for nothing.
    db.update_migration("m-%02d" % n, {"bytes_done": bytes_done})


def test_figures_count_by_state_and_sum_bytes_of_every_migration(db):
    _migration(db, 1, states.SUCCEEDED, 1000, bytes_done=3)
    _migration(db, 2, states.SUCCEEDED, [20, 4], bytes_done=4)
    # A failed or a running migration's copies crossed the wire too.
    _migration(db, 3, states.FAILED, 500)
    _migration(db, 4, states.RUNNING, 7)
    _migration(db, 5, states.QUEUED)
    # A row an older conductor wrote: NULL, adds nothing.
    db.update_migration("m-05", {"bytes_done": 9})
    with db.engine.begin() as connection:
        connection.execute(sa.update(models.Migration).where(
            models.Migration.id == "m-05").values(bytes_moved=None))
    plan_db.create(db, {"id": "p1", "name": "w1", "state": "draft",
                        "defaults": {}, "items": []})
    plan_db.create(db, {"id": "p2", "name": "w2", "state": "draft",
                        "defaults": {}, "items": []})
    assert db.acquire_slots("m-04", {
        "all": 2, "compute:c1": 1, "kvm:k1": 1, "pool:p1": 1,
        "plan:p1/all": 1}) is None
    assert db.acquire_slots("m-05", {"all": 2, "compute:c2": 1}) is None

    got = db_metrics.figures(db)

    assert got == {
        "migrations": {"succeeded": 2, "failed": 1, "running": 1,
                       "queued": 1},
        "bytes_moved": 1000 + 24 + 500 + 7,
        "plans": {"draft": 2},
        # The plan's own cap is not a kind: the same migration again.
        "slots": {"all": 2, "compute": 2, "kvm": 1, "pool": 1}}


def test_figures_of_an_empty_database_are_zeros(db):
    assert db_metrics.figures(db) == {
        "migrations": {}, "bytes_moved": 0, "plans": {},
        "slots": {"all": 0, "compute": 0, "kvm": 0, "pool": 0}}


def test_the_collector_on_the_real_database(db):
    _migration(db, 1, states.SUCCEEDED, 2048, bytes_done=48)
    out = scrape(metrics.Collector(db, FakeEngine(1), "cond-x"))
    assert by(out, "gauge", "cs2os_migrations", "state") == dict(
        {s: 0.0 for s in states.ALL}, succeeded=1.0)
    assert out[("counter", "cs2os_migration_bytes_moved_total")] == {
        (): 2048.0}


# -- the engine's busy workers and the listen address ----------------------

def test_engine_busy_counts_claimed_and_running_migrations():
    engine = conductor_engine.Engine(None, "c", 3, 60, None)
    assert engine.busy() == 0
    engine._running.update({"a": None, "b": object()})
    assert engine.busy() == 2
    engine._pool.shutdown()


@pytest.mark.parametrize("value, expected", [
    ("127.0.0.1:9797", ("127.0.0.1", 9797)),
    ("[::1]:9797", ("::1", 9797)),
    ("localhost:80", ("localhost", 80)),
    ("0.0.0.0:65535", ("0.0.0.0", 65535)),
])
def test_parse_listen(value, expected):
    assert metrics.parse_listen(value) == expected


@pytest.mark.parametrize("value", [
    "::1:9797", "127.0.0.1", ":9797", "127.0.0.1:0", "127.0.0.1:65536",
    "127.0.0.1:http", "[::1]"])
def test_parse_listen_refuses(value):
    with pytest.raises(ValueError):
        metrics.parse_listen(value)


class Conf:
    host = "cond-9"

    def __init__(self, listen):
        self.conductor = type("C", (), {"metrics_listen": listen})


def test_no_server_when_the_option_is_empty():
    assert metrics.server(Conf(""), object(), FakeEngine()) is None


def test_the_server_names_this_conductor():
    server = metrics.server(Conf("127.0.0.1:9797"), object(), FakeEngine())
    assert (server.host, server.port) == ("127.0.0.1", 9797)
    # Not started: stopping it does nothing.
    server.stop()
