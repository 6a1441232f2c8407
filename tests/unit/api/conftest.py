"""Fixtures of the cs2os-api tests: the configuration, the recording
conductor, the application in front of it, and one in front of a real
conductor manager."""

import types

import pytest
from oslo_config import cfg

from cs2os_agent import conf as cs2os_conf
from cs2os_agent.api import app as api_app
from cs2os_agent.api import policy
from cs2os_agent.conductor import manager
from tests.unit.api import harness


@pytest.fixture
def config():
    conf = cfg.ConfigOpts()
    for module in cs2os_conf.ALL_MODULES:
        module.register_opts(conf)
    conf([], project="cs2os", default_config_files=[])
    policy.reset()
    policy.init(conf)
    yield conf
    policy.reset()
    # Option groups are shared between ConfigOpts objects: overrides
    # would leak into the next test (and into the global CONF).
    conf.reset()


@pytest.fixture
def conductor():
    return harness.RecordingConductor()


@pytest.fixture
def app(config, conductor):
    config.set_override("auth_strategy", "noauth", group="api")
    return api_app.build(config, conductor)


@pytest.fixture
def manager_app(config, db):
    """The API in front of a real ConductorManager on the shared ``db``
    (in process; the engine only takes submissions)."""
    mgr = manager.ConductorManager(
        db, types.SimpleNamespace(submit=lambda mid: None))
    config.set_override("auth_strategy", "noauth", group="api")
    return api_app.build(config, mgr), mgr
