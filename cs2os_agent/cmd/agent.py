"""cs2os-agent: the compute-node side of cs2os."""

import sys

from oslo_log import log as logging

from cs2os_agent import conf
from cs2os_agent.agent import manager
from cs2os_agent.agent import rpcapi
from cs2os_agent.common import config
from cs2os_agent.common import rpc
from cs2os_agent.common import service

CONF = conf.CONF
LOG = logging.getLogger(__name__)


def main():
    config.parse_args(sys.argv[1:])
    logging.setup(CONF, "cs2os-agent")
    rpc.init(CONF)
    endpoints = [manager.AgentManager(CONF)]
    service.run(service.RPCService(rpcapi.TOPIC, CONF.host, endpoints))


if __name__ == "__main__":
    sys.exit(main())
