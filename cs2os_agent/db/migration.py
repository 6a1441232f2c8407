"""Schema versions: ``cs2os-manage db sync`` and ``db version``."""

from alembic import command
from alembic import config as alembic_config
from alembic import migration as alembic_migration
from alembic import script as alembic_script


def _config(connection):
    cfg = alembic_config.Config()
    cfg.set_main_option("script_location", "cs2os_agent.db:migrations")
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(database, revision="head"):
    """Bring the schema of ``database`` (a db.api.Database) to revision."""
    with database.engine.begin() as connection:
        command.upgrade(_config(connection), revision)


def current_version(database):
    with database.engine.connect() as connection:
        return alembic_migration.MigrationContext.configure(
            connection).get_current_revision()


def head_version():
    script = alembic_script.ScriptDirectory.from_config(_config(None))
    return script.get_current_head()
