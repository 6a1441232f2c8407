"""cs2os-conductor: runs migrations; the controller side of cs2os."""

import sys

from oslo_log import log as logging

from cs2os_agent import conf
from cs2os_agent import virt
from cs2os_agent.common import config
from cs2os_agent.common import gmr
from cs2os_agent.common import rpc
from cs2os_agent.common import service
from cs2os_agent.conductor import clients as conductor_clients
from cs2os_agent.conductor import engine as conductor_engine
from cs2os_agent.conductor import manager
from cs2os_agent.conductor import metrics
from cs2os_agent.conductor import notify
from cs2os_agent.conductor import plan_events
from cs2os_agent.conductor import plan_notify
from cs2os_agent.conductor import preflight
from cs2os_agent.conductor import rpcapi
from cs2os_agent.conductor.flow import context as flow_context
from cs2os_agent.db import api as db_api
from cs2os_agent.db import migration as db_migration
from cs2os_agent.db import sqlite_owner

CONF = conf.CONF
LOG = logging.getLogger(__name__)


def main():
    config.parse_args(sys.argv[1:])
    logging.setup(CONF, "cs2os-conductor")
    gmr.setup(CONF, "cs2os-conductor")
    service.reload_on_sighup(CONF)
    virt.init()
    try:
        # Held as long as this process runs (closed at the end of main).
        owned = sqlite_owner.own(CONF.database.connection)
    except sqlite_owner.SQLiteOwnedError as exc:
        LOG.error("%s", exc)
        return 1
    except OSError as exc:
        LOG.error("Cannot lock the SQLite database of [database] "
                  "connection: %s", exc)
        return 1
    db = db_api.Database(CONF.database.connection,
                         CONF.database.sqlite_busy_timeout,
                         wait_for_database=True)
    current, head = db_migration.current_version(db), \
        db_migration.head_version()
    if current != head:
        LOG.error("Database schema is at %s, this conductor needs %s: run "
                  "cs2os-manage db sync", current or "nothing", head)
        return 1
    rpc.init(CONF)
    notifier = notify.MigrationNotifier(CONF, CONF.host)
    # Every event of a plan's log goes out as cs2os.plan.<kind> too.
    plan_events.set_notifier(plan_notify.PlanNotifier(
        CONF, CONF.host, transport=notifier.transport))
    clients = conductor_clients.Clients(CONF)

    def make_context(migration, owner):
        return flow_context.FlowContext(migration, db, CONF, clients,
                                        notifier, owner=owner)

    engine = conductor_engine.Engine(
        db, CONF.host, CONF.conductor.workers, CONF.conductor.lease_seconds,
        make_context)
    endpoint = manager.ConductorManager(
        db, engine, notifier, clients.agent,
        find_vm=lambda ref: clients.cloudstack.find_vm(ref),
        preflight=lambda req: preflight.report(req, CONF, clients, db))
    rpc_service = service.RPCService(rpcapi.TOPIC, CONF.host, [endpoint])
    rpc_service.on_start = engine.start
    rpc_service.on_stop = engine.stop
    metrics_server = _start_metrics(db, engine)
    if metrics_server is False:
        return 1
    if metrics_server is not None:
        # Stopped with the service: the port closes before the process
        # ends, for a conductor restarted at once on the same address.
        rpc_service.on_stop = _chain(engine.stop, metrics_server.stop)
    # Now that every library registered its options (oslo.messaging's
    # at rpc.init).
    service.log_options(CONF)
    service.run(rpc_service)
    if owned is not None:
        owned.close()
    return 0


def _start_metrics(db, engine):
    """The metrics endpoint, serving; None when [conductor]
    metrics_listen is empty; False (said in the log) when it is not
    address:port or cannot be bound.  Bound before the service starts:
    a conductor asked for metrics it cannot serve claims nothing."""
    try:
        server = metrics.server(CONF, db, engine)
        if server is not None:
            server.start()
        return server
    except ValueError as exc:
        # (oslo.config's refusal of the value is a ValueError too.)
        LOG.error("[conductor] metrics_listen: %s", exc)
    except OSError as exc:
        LOG.error("Cannot serve metrics on [conductor] metrics_listen = "
                  "%s: %s", CONF.conductor.metrics_listen, exc)
    return False


def _chain(*calls):
    def run():
        for call in calls:
            call()
    return run


if __name__ == "__main__":
    sys.exit(main())
