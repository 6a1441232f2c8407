"""What the dependency-failure cases of the fault suite share.

tests/faults/test_dependencies_cloudstack.py (CloudStack's API answering
5xx or not at all at each call of the cold flow, a CloudStack job that
fails) and tests/faults/test_dependencies_openstack.py (Nova's API
answering 5xx at boot, stop and start, the agent's instances path running
out of space during the copy) run on real processes.

Each of those modules has a conductor of its own (``conductor`` below, in
place of tests/faults/conftest.py's): ``[cloudstack] timeout = 3`` (so a
held call times out), and ``[openstack] auth_url`` pointing at a proxy in
front of Keystone that rewrites the service catalog so that Nova is
reached through a fault-injecting proxy (tests/faults/novaproxy.py); the
minicloud and every other client see the real services.  A module takes
the fixtures by importing ``proxies_fixture`` and ``conductor_fixture``.
Every case is checked with the invariant checker
(tests/faults/invariants.py) and reported in the fault table
(tests/faults/report.py).  CS2OS_FAULTS=ci (default) runs a few
representative cases, full all.
"""

import collections
import os
import sqlite3

import pytest

from tests.e2e.conftest import delete_migrated_servers
from tests.e2e.conftest import new_vm
from tests.faults import cases
from tests.faults import chaos
from tests.faults import invariants
from tests.faults import novaproxy
from tools.testbed import harness as ft
from tools.testbed import images
from tools.testbed import warm_chain
from tools.testbed.minicloud import admin_auth

RUN_ID = ft.RUN_ID
CS_TIMEOUT = 3  # [cloudstack] timeout of a dependency module's conductor
HOLD = 10  # a "timeout" failure holds the call this long (> CS_TIMEOUT)
KEYSTONE = "http://127.0.0.1:5000"
NOVA = "http://127.0.0.1:8774"


# -- a module's conductor, behind the proxies --------------------------------


@pytest.fixture(scope="module", name="proxies")
def proxies_fixture():
    nova = novaproxy.FaultProxy(NOVA).start()
    keystone = novaproxy.FaultProxy(KEYSTONE)
    keystone.start()
    keystone.rewrite = [(NOVA.encode(), nova.url.encode()),
                        (KEYSTONE.encode(), keystone.url.encode())]
    yield collections.namedtuple("Proxies", "nova keystone")(nova, keystone)
    nova.stop()
    keystone.stop()


def _set_option(conf_file, section, name, value):
    with open(conf_file) as f:
        lines = f.read().splitlines()
    out, in_section, done = [], False, False
    for line in lines:
        if line.startswith("["):
            if in_section and not done:
                out.append("%s = %s" % (name, value))
                done = True
            in_section = line.strip() == "[%s]" % section
        elif in_section and line.split("=")[0].strip() == name:
            line, done = "%s = %s" % (name, value), True
        out.append(line)
    if in_section and not done:
        out.append("%s = %s" % (name, value))
    with open(conf_file, "w") as f:
        f.write("\n".join(out) + "\n")


@pytest.fixture(scope="module", name="conductor")
def conductor_fixture(request, workdir, services, cloud, minicloud, agent,
                      cloudstack_root, kvm_sshd, proxies):
    auth = admin_auth(minicloud)
    auth["auth_url"] = auth["auth_url"].replace(KEYSTONE,
                                                proxies.keystone.url)
    assert auth["auth_url"] != admin_auth(minicloud)["auth_url"], auth
    # One per module, each on a database and a host name of its own.
    name = "%s-faults-%s" % (RUN_ID,
                             request.module.__name__.rsplit(".", 1)[-1])
    proc = warm_chain.make_conductor(
        workdir, name, ft.TRANSPORT_URL, services["exchange"], cloud, auth,
        cloudstack_root, kvm_sshd)
    _set_option(proc.conf_file, "cloudstack", "timeout", CS_TIMEOUT)
    proc.db_path = os.path.join(workdir, "e2e-%s.sqlite" % name)
    proc.manage("db", "sync")
    proc.start(timeout=120)
    yield proc
    proc.stop()
    delete_migrated_servers(minicloud)


def _admin():
    from cs2os_agent.common import context as cs2os_context

    return cs2os_context.get_admin_context()


# -- what the cases share ---------------------------------------------------


def _record_of(db_path, vm):
    """The newest migration of ``vm`` (by the name it was requested by)."""
    try:
        conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True,
                               timeout=5)
        try:
            row = conn.execute(
                "SELECT id FROM migrations WHERE source_ref = ? ORDER BY "
                "created_at DESC LIMIT 1", (vm.name,)).fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return None
    return row and invariants.read_record(db_path, row[0], events=False)


def _selected(all_cases, ci):
    return all_cases if cases.MODE == "full" else \
        [c for c in all_cases if c in ci]


def _start(cloud, cloudstack_root, agent, conductor, **volume_args):
    chaos.ensure_plain(agent)
    chaos.ensure_plain(conductor)
    vm = new_vm(cloud, cloudstack_root, **volume_args)
    return vm, images.sha256(vm.volume.overlay)


def _events(final):
    return [(e["step"], e["kind"], e["message"][:160])
            for e in final["events"] if e["message"] != "done"]


class Migration:
    """One migration of ``vm`` on the module's conductor, watched by the
    live-copy monitor; ``mid`` is set as soon as it exists, for the
    cleanup."""

    def __init__(self, conductor, minicloud, vm):
        self.conductor = conductor
        self.minicloud = minicloud
        self.vm = vm
        self.mid = None

    def start(self, conductor_api, ctxt):
        """Request it; returns its LiveCopyMonitor (a context manager)."""
        created = conductor_api.create_migration(
            ctxt, {"source": self.vm.name,
                   "host": self.minicloud.compute_host})
        self.mid = created["id"]
        return invariants.LiveCopyMonitor(
            self.conductor.db_path, self.mid, self.vm.instancename,
            self.minicloud.instances_path)

    def wait_final(self):
        return invariants.wait_final(self.conductor.db_path, self.mid, 600)
