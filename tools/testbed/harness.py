"""What a run of the test bed is called, where it meets its services, and
how it waits for them.

Every name a run creates (libvirt domains, the RabbitMQ vhost, agent host
names, directories) carries RUN_ID, and only those are removed afterwards.
The tests' fixtures (tests/conftest.py) check first that the services are
there (tests/functional/checks.py); the sandbox and the benchmarks use the
same names and waits.
"""

import json
import os
import threading
import time
import uuid

import oslo_messaging as messaging

from cs2os_agent.common import context as cs2os_context
from tools.testbed import agent_process
from tools.testbed import process

RUN_ID = uuid.uuid4().hex[:8]
# The broker the test services run; each test run gets a vhost of its own.
# Exchanges alone do not isolate runs: RabbitMQ queue names are global in a
# vhost, so two runs' servers on one topic would share a queue and take
# each other's messages.
BROKER_URL = os.environ.get(
    "CS2OS_TEST_BROKER_URL", "rabbit://guest:guest@127.0.0.1:5672/")
VHOST = "cs2os-test-%s" % RUN_ID
TRANSPORT_URL = BROKER_URL.rstrip("/") + "/" + VHOST
LIBVIRT_URI = os.environ.get("CS2OS_TEST_LIBVIRT_URI", "qemu:///system")
HINT = "start the test services with: tools/test-services.sh start"
# Short on purpose: throttled copies outlast it, so they pass only because
# the call monitor keeps long calls alive, and a killed agent is noticed
# within seconds.
RPC_RESPONSE_TIMEOUT = 3


class AgentFactory:
    """Starts agents named after the run (the tests' ``agents`` fixture)
    and stops every one it started."""

    def __init__(self, workdir, services, agent_api, instances_path,
                 cloudstack_root):
        self._args = (workdir, services, agent_api, instances_path,
                      cloudstack_root)
        self.started = []

    def start(self, name="agent", **kwargs):
        workdir, services, agent_api, instances_path, root = self._args
        kwargs.setdefault("allowed_source_roots", [os.path.join(root, "mnt")])
        agent = agent_process.AgentProcess(
            workdir,
            host="cs2os-test-%s-%s" % (RUN_ID, name),
            transport_url=TRANSPORT_URL,
            exchange=services["exchange"],
            instances_path=instances_path,
            **kwargs,
        )
        self.started.append(agent)
        agent.info = agent.start(
            agent_api, cs2os_context.get_admin_context()
        )
        return agent

    def stop_all(self):
        process.stop_together(self.started)


class RecordingConductor:
    """Receives the agent's progress casts like the conductor will."""

    target = messaging.Target(version="1.0")

    def __init__(self):
        self.reports = []
        self._cond = threading.Condition()

    def report_progress(self, context, migration_id, progress):
        with self._cond:
            self.reports.append((migration_id, progress))
            self._cond.notify_all()

    def final_reports(self, migration_id, timeout=30):
        """Every report of ``migration_id`` once its last (100%) arrived.

        Casts travel apart from the RPC reply, so the final report may
        land a moment after sync_overlay returned.
        """
        def mine():
            return [p for m, p in self.reports if m == migration_id]

        def complete():
            got = mine()
            return got and got[-1]["bytes_done"] == got[-1]["bytes_total"]

        with self._cond:
            if not self._cond.wait_for(complete, timeout):
                raise AssertionError("no final progress report for %s: %r"
                                     % (migration_id, mine()))
            return mine()


class Call(threading.Thread):
    """An RPC call running in the background; keeps result or error."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self._fn, self._args = fn, args
        self.result = self.error = None

    def run(self):
        try:
            self.result = self._fn(*self._args)
        except Exception as exc:  # noqa: BLE001
            self.error = exc


def wait_for(predicate, timeout=30, what="condition", interval=0.05):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(interval)


def wait_console(path, text, timeout=120):
    """Wait until a guest printed ``text`` into its console log ``path``."""
    seen = []

    def printed():
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                seen[:] = [f.read()]
        return bool(seen) and text in seen[0]

    try:
        wait_for(printed, timeout, interval=0.2)
    except AssertionError:
        raise AssertionError("%s never showed %r; it has %r" % (
            path, text, seen[0][-300:] if seen else "")) from None


def wait_state(conductor_api, ctxt, migration_id, states, timeout=600):
    """Poll a migration until its state is one of ``states``; return it."""
    found = []

    def reached():
        found[:] = [conductor_api.get_migration(ctxt, migration_id)]
        return found[0]["state"] in states

    try:
        # 0.2 s like wait_step: most e2e tests wait for their migration
        # here, and each poll is one record read over RPC.
        wait_for(reached, timeout, interval=0.2)
    except AssertionError:
        m = found[0]
        raise AssertionError("migration %s stayed %s at %s: %s" % (
            migration_id, m["state"], m["step"], m["events"][-3:])) from None
    return found[0]


def wait_step(conductor_api, ctxt, migration_id, step, timeout=300):
    wait_for(lambda: conductor_api.get_migration(
        ctxt, migration_id)["step"] == step, timeout,
        "migration %s to reach %s" % (migration_id, step), interval=0.2)


def durable_offset(partial_path):
    """How far a partial copy is recorded as fsynced (its checkpoint)."""
    try:
        with open(partial_path + ".json") as f:
            return json.load(f).get("durable", 0)
    except (OSError, ValueError):
        return 0
