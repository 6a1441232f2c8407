"""Builds the configured application once per process."""

from oslo_log import log as logging

from cs2os_agent import conf
from cs2os_agent.api import app as api_app
from cs2os_agent.api import policy
from cs2os_agent.common import rpc
from cs2os_agent.conductor import rpcapi as conductor_rpcapi

CONF = conf.CONF
LOG = logging.getLogger(__name__)


def make_application(config=None):
    """The WSGI app from a parsed configuration; connects to the bus."""
    config = config or CONF
    rpc.init(config)
    policy.init(config)
    conductor_api = conductor_rpcapi.ConductorAPI(
        timeout=config.api.conductor_timeout)
    LOG.info("cs2os-api ready (auth_strategy %s)", config.api.auth_strategy)
    return api_app.build(config, conductor_api)
