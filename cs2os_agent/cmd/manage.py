"""cs2os-manage: database schema tools for operators."""

import sys

from oslo_config import cfg

from cs2os_agent import conf
from cs2os_agent.common import config
from cs2os_agent.db import api as db_api
from cs2os_agent.db import migration

CONF = conf.CONF


def _database():
    return db_api.Database(CONF.database.connection,
                           CONF.database.sqlite_busy_timeout)


def db_sync():
    database = _database()
    migration.upgrade(database, CONF.command.revision)
    print("database at revision %s" % migration.current_version(database))


def db_version():
    current = migration.current_version(_database())
    head = migration.head_version()
    print("current: %s, latest: %s" % (current or "none (empty)", head))
    return 0 if current == head else 1


def _add_commands(subparsers):
    db = subparsers.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command")
    sync = db_sub.add_parser("sync", help="upgrade the schema")
    sync.add_argument("revision", nargs="?", default="head")
    sync.set_defaults(func=db_sync)
    version = db_sub.add_parser("version", help="show the schema revision")
    version.set_defaults(func=db_version)


def main(argv=None):
    CONF.register_cli_opt(cfg.SubCommandOpt(
        "command", title="commands", handler=_add_commands))
    config.parse_args(sys.argv[1:] if argv is None else argv)
    func = getattr(CONF.command, "func", None)
    if func is None:
        print("usage: cs2os-manage db {sync,version}", file=sys.stderr)
        return 2
    return func() or 0


if __name__ == "__main__":
    sys.exit(main())
