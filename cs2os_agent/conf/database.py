from oslo_config import cfg

database_group = cfg.OptGroup(
    "database",
    title="Database options",
    help="Where cs2os-conductor keeps migration records.",
)

database_opts = [
    cfg.StrOpt(
        "connection",
        default="sqlite:////var/lib/cs2os/cs2os.sqlite",
        secret=True,
        help="SQLAlchemy URL of the database. SQLite suits one conductor; "
        "run several conductors on one MySQL/MariaDB or PostgreSQL "
        "database (e.g. postgresql+psycopg2://cs2os:PASS@db/cs2os).",
    ),
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


def list_opts():
    return {database_group: database_opts}
