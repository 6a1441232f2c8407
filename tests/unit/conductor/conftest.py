"""The conductor's manager on the real SQLite database (``db``)."""

import pytest

from cs2os_agent.conductor import manager
from tests.unit.conductor.helpers import Agent
from tests.unit.conductor.helpers import Engine


@pytest.fixture
def mgr(db):
    return manager.ConductorManager(db, Engine(), agent_api=Agent())
