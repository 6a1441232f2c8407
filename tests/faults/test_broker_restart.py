"""RabbitMQ restarted in the middle of a copy.

On a private broker (tests/faults/broker.py: restarting the shared one
would fail every other test and the minicloud's Nova): an agent and a
conductor of this test on it, a cold migration with a ~12 s copy, the
broker stopped (SIGTERM, by PID) mid-copy and started again on the same
port and mnesia dir, OUTAGE seconds later (longer than the services'
rpc_response_timeout).  The migration must end keeping every invariant,
and succeed: the copy went on on the agent, and sync_overlay is
idempotent (a second call returns the staged copy).
"""

import os
import time

import oslo_messaging as messaging
import pytest

from cs2os_agent import conf
from cs2os_agent.agent import rpcapi as agent_rpcapi
from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import rpc
from cs2os_agent.conductor import rpcapi as conductor_rpcapi
from tests.e2e.conftest import conductor_sections
from tests.e2e.conftest import new_vm
from tests.faults import broker as private_broker
from tests.faults import chaos
from tests.faults import invariants
from tests.faults import report
from tools.testbed import agent_process
from tools.testbed import conductor_process
from tools.testbed import harness as ft
from tools.testbed import images

MiB = images.MiB
RUN_ID = ft.RUN_ID
OUTAGE = 15


@pytest.fixture(scope="module")
def broker(workdir, services):
    b = private_broker.PrivateBroker(os.path.join(workdir, "rabbit-faults"))
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def private_apis(broker, services):
    """RPC clients on the private broker (the process-wide transport of
    the other tests stays as it is)."""
    transport = messaging.get_rpc_transport(
        conf.CONF, url=broker.url, allowed_remote_exmods=rpc.ALLOWED_EXMODS)
    saved, rpc.TRANSPORT = rpc.TRANSPORT, transport
    try:
        apis = (conductor_rpcapi.ConductorAPI(), agent_rpcapi.AgentAPI())
    finally:
        rpc.TRANSPORT = saved
    yield apis
    transport.cleanup()


@pytest.fixture(scope="module")
def chain(workdir, services, broker, private_apis, cloud, minicloud,
          cloudstack_root):
    conductor_api, agent_api = private_apis
    admin = cs2os_context.get_admin_context()
    agent = agent_process.AgentProcess(
        workdir, minicloud.compute_host, broker.url, services["exchange"],
        minicloud.instances_path, [os.path.join(cloudstack_root, "mnt")],
        max_bandwidth_mbps=80)
    agent.launch()
    agent.wait_ready(lambda: agent_api.get_agent_info(
        admin, agent.host, timeout=2))
    spool = os.path.join(workdir, "spool-faults-rabbit")
    os.makedirs(spool, exist_ok=True)
    db_path = os.path.join(workdir, "faults-rabbit-%s.sqlite" % RUN_ID)
    conductor = conductor_process.ConductorProcess(
        workdir, "cs2os-faults-%s-rabbit-conductor" % RUN_ID, broker.url,
        services["exchange"], "sqlite:///%s" % db_path,
        "notifications-faults-rabbit",
        sections=conductor_sections(cloud, minicloud, cloudstack_root,
                                    spool))
    conductor.db_path = db_path
    conductor.manage("db", "sync")
    conductor.start(conductor_api)  # on the private broker
    yield {"agent": agent, "conductor": conductor,
           "conductor_api": conductor_api}
    conductor.stop()
    agent.stop()


def test_broker_restarted_mid_copy(chain, broker, ctxt, cloud, minicloud,
                                   cloudstack_root, workdir):
    started = time.monotonic()
    conductor, conductor_api = chain["conductor"], chain["conductor_api"]
    # ~120 MiB at 10 MB/s: ~12 s of copy.
    vm = new_vm(cloud, cloudstack_root,
                writes=((0x5A, 4 * MiB, 120 * MiB),),
                template_size=192 * MiB)
    digest = images.sha256(vm.volume.overlay)
    created = conductor_api.create_migration(
        ctxt, {"source": vm.name, "host": minicloud.compute_host})
    mid = created["id"]
    monitor = invariants.LiveCopyMonitor(
        conductor.db_path, mid, vm.instancename, minicloud.instances_path)
    outcome, held, note = "?", False, ""
    try:
        with monitor:
            invariants.wait_record(
                conductor.db_path, mid,
                lambda r: r["step"] == "sync" and r["bytes_done"] > 0,
                "the copy under way")
            broker.stop()
            down_at = time.monotonic()
            # Longer than rpc_response_timeout (10 s here): a copy's call
            # monitor cannot bridge the outage, and the copy (it goes on on
            # the agent) ends while the broker is down: a restart of
            # RabbitMQ, as in a rolling upgrade, not a blip.
            time.sleep(OUTAGE)
            broker.start()
            print("\n[broker] private RabbitMQ down for %.1f s mid-copy"
                  % (time.monotonic() - down_at))
            final = invariants.wait_final(conductor.db_path, mid)
        outcome = final["state"]
        note = invariants.check_final(final, cloud, minicloud, vm, workdir,
                                      overlay_digest=digest,
                                      monitor=monitor)
        held = True
        assert chain["agent"].proc.poll() is None, "the agent died"
        assert conductor.proc.poll() is None, "the conductor died"
        print("[broker] the migration ended %s: %s; sync %s; events %s" % (
            outcome, final["error"] or note,
            {k: final["result"].get("sync", {}).get(k)
             for k in ("reused", "resumed_at", "bytes_copied")},
            [(e["step"], e["message"][:90]) for e in final["events"]
             if e["message"] != "done"]))
        # A broker restart is no reason to give up a migration.
        assert outcome == "succeeded", (
            "invariants held, but the broker restart failed the migration: "
            "%s; events %s" % (final["error"],
                               [(e["step"], e["message"])
                                for e in final["events"]]))
    except AssertionError as exc:
        note = note if held else str(exc)
        raise
    finally:
        report.record("broker restart mid-sync", "cold", "rabbitmq restart",
                      outcome, time.monotonic() - started, held,
                      "" if held else note,
                      expected=(outcome == "succeeded") if outcome != "?"
                      else None)
        chaos.delete_servers(minicloud, mid)
        chaos.stop_source_vm(cloud, vm)
