"""[database]: oslo.db's standard options, plus cs2os's SQLite busy timeout.

oslo.db owns the group's options (connection, pool sizes, recycle time,
connection retries, mysql_sql_mode, ...; the config reference lists them
under its namespace ``oslo.db``); cs2os only sets its default connection
and adds ``sqlite_busy_timeout``.
"""

from oslo_config import cfg

try:
    from oslo_db import options as db_options
except ImportError:  # an agent or API node: no database, no oslo.db here
    db_options = None

# One conductor on the controller; several need MySQL/MariaDB or
# PostgreSQL (the conductor refuses a SQLite file another one holds).
DEFAULT_CONNECTION = "sqlite:////var/lib/cs2os/cs2os.sqlite"

database_group = cfg.OptGroup(
    "database",
    title="Database options",
    help="Where cs2os-conductor keeps migration records (oslo.db). "
    "connection defaults to %s: one conductor on a local SQLite file. "
    "Several conductors share one MySQL/MariaDB (Galera too) or "
    "PostgreSQL database, e.g. mysql+pymysql://cs2os:PASS@db/cs2os; "
    "a second conductor on a SQLite file another one holds refuses to "
    "start (cs2os-manage and cs2os-status may open it beside the "
    "conductor). Of oslo.db's options these are not used: slave_connection "
    "and the asyncio ones (every query goes to connection: claims read "
    "their own writes), synchronous_reader, the db_* ones, "
    "use_db_reconnect and backend; writes that hit a deadlock are retried "
    "5 times; "
    "max_retries and retry_interval are how long cs2os-conductor waits for "
    "the database at start." % DEFAULT_CONNECTION,
)

database_opts = [
    cfg.IntOpt(
        "sqlite_busy_timeout",
        default=30,
        min=1,
        help="Seconds a SQLite writer waits for the database lock.",
    ),
]


def register_opts(conf):
    conf.register_group(database_group)
    conf.register_opts(database_opts, group=database_group)
    if db_options is not None:
        # On oslo.db's option itself (not only in ``conf``), so that the
        # sample config and the config reference show cs2os's default.
        cfg.set_defaults(db_options.database_opts,
                         connection=DEFAULT_CONNECTION)
        conf.register_opts(db_options.database_opts, group=database_group)


def list_opts():
    # oslo.db's own options are listed by its namespace (oslo.db).
    return {database_group: database_opts}
