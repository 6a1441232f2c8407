"""cs2os-agent: the compute-node side of cs2os."""

import sys

from oslo_log import log as logging

from cs2os_agent import conf
from cs2os_agent import virt
from cs2os_agent.agent import manager
from cs2os_agent.agent import rpcapi
from cs2os_agent.common import config
from cs2os_agent.common import gmr
from cs2os_agent.common import rpc
from cs2os_agent.common import service

CONF = conf.CONF
LOG = logging.getLogger(__name__)


def main():
    config.parse_args(sys.argv[1:])
    logging.setup(CONF, "cs2os-agent")
    gmr.setup(CONF, "cs2os-agent")
    service.reload_on_sighup(CONF)
    virt.init()
    rpc.init(CONF)
    agent = manager.AgentManager(CONF)
    rpc_service = service.RPCService(rpcapi.TOPIC, CONF.host, [agent])
    # Mirror daemons and tunnels run in sessions of their own: without
    # this they would outlive a stopped agent.
    rpc_service.on_stop = agent.stop_mirrors
    # Now that every library registered its options (oslo.messaging's
    # at rpc.init).
    service.log_options(CONF)
    service.run(rpc_service)


if __name__ == "__main__":
    sys.exit(main())
