"""Alembic environment: run migrations on the connection cs2os hands in."""

from alembic import context

from cs2os_agent.db import models

config = context.config
connection = config.attributes["connection"]
context.configure(connection=connection,
                  target_metadata=models.Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
