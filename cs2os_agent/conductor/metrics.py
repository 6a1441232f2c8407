"""Prometheus metrics of a conductor ([conductor] metrics_listen).

The figures of migrations, plans and slots are read from the database at
each scrape (db/metrics.py: aggregate queries only), so every conductor
on a database reports the same cloud-wide truth and nothing is counted in
memory that a restart would lose; the workers figures are this
process's.  Served by prometheus_client's own HTTP server on a daemon
thread, from the conductor's start until its stop.

A scrape that cannot read the database fails whole (HTTP 500, one log
line here): a partial answer would make the missing series look like
zeros.  The conductor and its migrations carry on.
"""

import prometheus_client
from oslo_log import log as logging
from prometheus_client import core

from cs2os_agent.common import states
from cs2os_agent.conductor import plans
from cs2os_agent.db import metrics as db_metrics

LOG = logging.getLogger(__name__)


class ScrapeFailed(Exception):
    """The database did not answer a scrape (logged once, here)."""


def parse_listen(value):
    """(host, port) of ``address:port``; an IPv6 address in brackets."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or ":" in host and not value.startswith("["):
        raise ValueError("%r is not address:port (an IPv6 address goes in "
                         "brackets: [::1]:9797)" % value)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("%r: the port must be 1-65535" % value)
    return host, int(port)


def _first_line(exc):
    # A driver's message runs on with the SQL and its parameters.
    text = str(exc).strip().splitlines()
    return "%s: %s" % (type(exc).__name__, text[0] if text else "")


class Collector:
    """prometheus_client's custom collector: reads at every collect()."""

    def __init__(self, db, engine, conductor):
        self.db = db
        self.engine = engine
        self.conductor = conductor

    def describe(self):
        # Registering must not query the database (the default describe
        # is a collect()).
        return []

    def collect(self):
        try:
            figures = db_metrics.figures(self.db)
        except Exception as exc:
            failure = _first_line(exc)
        else:
            return self._families(figures)
        # Said outside the except block: oslo.log would add the
        # exception's summary (a second copy) to a line said in it.
        LOG.error("Metrics scrape failed, the database did not answer: %s",
                  failure)
        raise ScrapeFailed()

    def _families(self, figures):
        yield _by_label(
            "cs2os_migrations", "Migrations in the database, by state.",
            "state", states.ALL, figures["migrations"])
        yield core.CounterMetricFamily(
            "cs2os_migration_bytes_moved",
            "Bytes moved across clouds by every migration in the "
            "database, whatever its state (a failed or cancelled one's "
            "copies crossed the wire too): template upload, root disk, "
            "each data disk and the warm mirror.",
            value=figures["bytes_moved"])
        yield _by_label(
            "cs2os_plans", "Plans in the database, by state.", "state",
            plans.PLAN_STATES, figures["plans"])
        yield _by_label(
            "cs2os_slots_held", "Slots held by migrations in flight "
            "([conductor] max_* limits), by kind of resource.", "kind",
            db_metrics.SLOT_KINDS, figures["slots"])
        for name, text, value in (
                ("cs2os_conductor_workers", "This conductor's workers "
                 "([conductor] workers).", self.engine.workers),
                ("cs2os_conductor_workers_busy", "This conductor's workers "
                 "taken by a migration (waiting for a slot or a cutover "
                 "window included).", self.engine.busy())):
            family = core.GaugeMetricFamily(name, text,
                                            labels=["conductor"])
            family.add_metric([self.conductor], value)
            yield family


def _by_label(name, text, label, known, counts):
    """A gauge with one sample per ``known`` value (0 when absent), then
    any other value the database holds."""
    family = core.GaugeMetricFamily(name, text, labels=[label])
    for value in list(known) + sorted(set(counts) - set(known)):
        family.add_metric([value], counts.get(value, 0))
    return family


class MetricsServer:
    """The HTTP endpoint (GET /metrics, any path answers the same)."""

    def __init__(self, listen, collector):
        self.listen = listen
        self.host, self.port = parse_listen(listen)
        self.registry = prometheus_client.CollectorRegistry(
            auto_describe=False)
        self.registry.register(collector)
        self._server = None
        self._thread = None

    def start(self):
        """Bind and serve; OSError when the address cannot be bound."""
        self._server, self._thread = prometheus_client.start_http_server(
            self.port, self.host, self.registry)
        LOG.info("Serving Prometheus metrics on http://%s/metrics",
                 self.listen)

    def stop(self):
        if self._server is None:
            return
        self._server.shutdown()
        # Closed now: the port is free for the next conductor at once.
        self._server.server_close()
        self._thread.join(timeout=10)
        self._server = None
        LOG.info("Stopped serving metrics on %s", self.listen)


def server(conf, db, engine):
    """The conductor's MetricsServer, not started; None when
    [conductor] metrics_listen is empty.  ValueError if it is invalid."""
    listen = conf.conductor.metrics_listen
    if not listen:
        return None
    return MetricsServer(listen, Collector(db, engine, conf.host))
