"""The clients a migration flow talks through, built once per conductor."""

import functools

from cs2os_agent.agent import rpcapi as agent_rpcapi
from cs2os_agent.cloudstack import client as cloudstack_client
from cs2os_agent.common import context
from cs2os_agent.openstack import client as openstack_client
from cs2os_agent.openstack import network as openstack_network


class Clients:
    def __init__(self, conf):
        self.conf = conf
        self.admin_context = context.get_admin_context()

    @functools.cached_property
    def cloudstack(self):
        return cloudstack_client.CloudStackClient.from_conf(self.conf)

    @functools.cached_property
    def openstack(self):
        return openstack_client.OpenStackClient(
            openstack_client.connect(self.conf),
            wait_timeout=self.conf.conductor.wait_timeout)

    @functools.cached_property
    def network(self):
        return openstack_network.NetworkClient(self.openstack.conn)

    @functools.cached_property
    def agent(self):
        return agent_rpcapi.AgentAPI()
