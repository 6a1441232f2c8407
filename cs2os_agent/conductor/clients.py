"""The clients a migration flow talks through, built once per conductor."""

import functools
import threading

from cs2os_agent.agent import rpcapi as agent_rpcapi
from cs2os_agent.cloudstack import client as cloudstack_client
from cs2os_agent.common import context
from cs2os_agent.openstack import client as openstack_client
from cs2os_agent.openstack import network as openstack_network


class Clients:
    def __init__(self, conf):
        self.conf = conf
        self.admin_context = context.get_admin_context()
        self._projects = {}
        self._projects_lock = threading.Lock()

    @functools.cached_property
    def cloudstack(self):
        return cloudstack_client.CloudStackClient.from_conf(self.conf)

    @functools.cached_property
    def openstack(self):
        """As cs2os's [openstack] user in its own project: Glance templates,
        flavors, compute services, Keystone projects."""
        return openstack_client.OpenStackClient(
            openstack_client.connect(self.conf),
            wait_timeout=self.conf.conductor.wait_timeout)

    @functools.cached_property
    def network(self):
        return openstack_network.NetworkClient(self.openstack.conn)

    def in_project(self, project_id):
        """(OpenStackClient, NetworkClient) as cs2os's user scoped to
        ``project_id``: what a migration creates for its owner (server,
        ports, image membership) is created there.  None: cs2os's own
        project, where migrations recorded before target projects existed
        made theirs and must find them again."""
        if project_id is None:
            return self.openstack, self.network
        with self._projects_lock:
            if project_id not in self._projects:
                compute = openstack_client.OpenStackClient(
                    openstack_client.connect(self.conf, project_id),
                    wait_timeout=self.conf.conductor.wait_timeout)
                self._projects[project_id] = (
                    compute, openstack_network.NetworkClient(compute.conn))
            return self._projects[project_id]

    @functools.cached_property
    def agent(self):
        return agent_rpcapi.AgentAPI()
