"""The live flow's tests' world: a real SQLite record, fake agent, Nova and
CloudStack that log every call in one list (``log``), so a test asserts
their order across all three.

The steps the live flow shares with the others (image, ports, boot and
their undo) are replaced by fakes that log their name; validate's checks
of the source (prepare.validate, mirroring.check_source) too.  The real
live steps, the real stop_source, cleanup and retire_source run.
"""

import types

from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import context as flow_context
from cs2os_agent.conductor.flow import live
from cs2os_agent.conductor.flow import mirroring
from cs2os_agent.conductor.flow import prepare
from cs2os_agent.conductor.flow import runner
from tests.unit.conductor.flow.script import new_migration

MID = "m1"
CONF = types.SimpleNamespace(
    conductor=types.SimpleNamespace(lease_seconds=60,
                                    agent_restart_timeout=30,
                                    rollback_attempts=1),
    cloudstack=types.SimpleNamespace(unmanage_source=True))
HOP = {"temp_domain": "cs2os-live-m1", "downtime_ms": 23, "seconds": 1.5,
       "memory_bytes": 64 << 20}
MOVED = {"downtime_ms": 12, "switch_seconds": 0.4, "stream_bytes": 1 << 20,
         "state": "running"}
SOURCE = {"name": "web-1", "state": "Running",
          "root_volume": {"storage": {"type": "NetworkFilesystem"}}}


class Agent:
    def __init__(self, world):
        self.world = world
        self.fail = {}  # method: exception to raise

    def __getattr__(self, method):
        def call(context, host, *args):
            self.world.log.append(method)
            self.world.agent_args[method] = (host,) + args
            hook = self.world.hooks.get(method)
            if hook:
                hook()
            if method in self.fail:
                raise self.fail[method]
            return {"prepare_live_target": {"staged": "/nova/staged"},
                    "live_hop": HOP, "finish_live_move": MOVED,
                    "begin_live_move": {"target_waiting": True},
                    "abort_live_move": {"aborted": True},
                    "live_hop_back": {"hopped_back": True},
                    "restore_disk": {"restored": True}}.get(method, {})
        return call


class Nova:
    def __init__(self, world):
        self.world = world

    def reset_state(self, server_id, state):
        self.world.log.append("nova reset %s" % state)

    def wait_server(self, server_id, status):
        self.world.log.append("nova wait %s" % status)
        return types.SimpleNamespace(id=server_id, status=status)

    def stop_server(self, server_id):
        self.world.log.append("nova stop")


class CloudStack:
    def __init__(self, world):
        self.world = world
        self.vm = {"id": "vm-1", "name": "web-1", "state": "Running",
                   "haenable": True}

    def find_vm(self, ref):
        return dict(self.vm)

    def set_vm_ha(self, vm_id, enabled):
        hook = self.world.hooks.get("set_vm_ha")
        if hook:
            hook()
        self.world.log.append("cs ha %s" % enabled)
        self.vm["haenable"] = enabled

    def stop_vm(self, vm_id, forced=False):
        self.world.log.append("cs stop forced=%s" % forced)
        self.vm["state"] = "Stopped"

    def start_vm(self, vm_id):
        self.world.log.append("cs start")
        self.vm["state"] = "Running"

    def unmanage_vm(self, vm_id):
        self.world.log.append("cs unmanage")


class Clients:
    admin_context = None

    def __init__(self, world):
        self.agent = Agent(world)
        self.cloudstack = CloudStack(world)
        self.nova = Nova(world)

    def in_project(self, project_id):
        return self.nova, None


class World:
    def __init__(self, db, monkeypatch, options=None, resources=None):
        self.db = db
        self.log = []
        self.agent_args = {}
        self.hooks = {}
        self.clients = Clients(self)
        new_migration(db, MID, mode="live", options=options or {},
                      source=dict(SOURCE), resources=dict(
                          {"kvm_host": "10.0.0.5", "source_domain": "i-2-7",
                           "base_proof": {"digest": "d"},
                           "overlay_virtual_size": 64 << 20},
                          **(resources or {})))

        def fake(name, **recorded):
            def step(ctx):
                self.log.append(name)
                if recorded:
                    ctx.resource(**recorded)
            return step

        def fake_undo(name):
            def undo(ctx):
                self.log.append(name)
            return undo

        monkeypatch.setattr(prepare, "validate", fake("prepare.validate"))
        monkeypatch.setattr(mirroring, "check_source",
                            fake("check_source"))
        steps = dict(live.STEPS, image=fake("image"), ports=fake("ports"),
                     boot=fake("boot", server_id="srv-1", host="nova-1"))
        monkeypatch.setattr(live, "STEPS", list(steps.items()))
        rollback = dict(live.ROLLBACK, undo_boot=fake_undo("undo_boot"),
                        undo_ports=fake_undo("undo_ports"))
        monkeypatch.setattr(live, "ROLLBACK", list(rollback.items()))
        self.ctx = flow_context.FlowContext(db.get_migration(MID), db, CONF,
                                            self.clients)

    def fail(self, method, exc):
        self.clients.agent.fail[method] = exc

    def record(self):
        return self.db.get_migration(MID)

    def run(self):
        runner.run(self.ctx)
        return self.record()


def refused(reason="no"):
    return exception.LiveRefused(reason=reason)
