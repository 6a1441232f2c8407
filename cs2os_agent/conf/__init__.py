"""cs2os configuration: one module per option group.

Importing this package registers every group on the global ``CONF``, so any
module can ``from cs2os_agent import conf; CONF = conf.CONF`` and read
options without caring about registration order.
"""

from oslo_config import cfg

from cs2os_agent.conf import agent
from cs2os_agent.conf import api
from cs2os_agent.conf import cloudstack
from cs2os_agent.conf import conductor
from cs2os_agent.conf import database
from cs2os_agent.conf import default
from cs2os_agent.conf import libvirt
from cs2os_agent.conf import live
from cs2os_agent.conf import mirror
from cs2os_agent.conf import openstack
from cs2os_agent.conf import transfer

CONF = cfg.CONF

# Every option module, in the order the sample config lists them.
ALL_MODULES = (
    default,
    agent,
    libvirt,
    transfer,
    mirror,
    live,
    conductor,
    api,
    database,
    openstack,
    cloudstack,
)

for _module in ALL_MODULES:
    _module.register_opts(CONF)
