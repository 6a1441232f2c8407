"""One conductor of the plan simulation, as a process of its own: the real
engine, manager and plans on the shared database, with the fake cold flow
of plan_sim.py.  It creates and starts its plan (every CONDUCTORS-th VM of
the fleet, from ``--index``), runs until SIGTERM, then stops its engine
and writes what it recorded, with its CPU time, to ``--out`` as JSON.

    python -m tests.functional.plan_sim_conductor --db URL --index N ...
"""

import argparse
import json
import resource
import signal
import threading
import types

from cs2os_agent.common import context as cs2os_context
from cs2os_agent.conductor import engine as conductor_engine
from cs2os_agent.conductor import manager
from cs2os_agent.conductor.flow import admission
from cs2os_agent.conductor.flow import context as flow_context
from cs2os_agent.db import api
from tests.functional import plan_sim


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--conductors", type=int, required=True)
    parser.add_argument("--vms", type=int, required=True)
    parser.add_argument("--fleet", required=True,
                        help="computes,kvms,pools")
    parser.add_argument("--limits", required=True,
                        help="JSON: {max_in_flight: N, ...}")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--poll", type=float, required=True)
    parser.add_argument("--out", required=True)
    return parser.parse_args()


def main():
    args = _arguments()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    fleet = plan_sim.Fleet(args.vms, *map(int, args.fleet.split(",")))
    recorder = plan_sim.Recorder()
    plan_sim.FakeColdFlow(fleet, recorder, seed=args.index).install()
    # How often a migration waiting for a slot looks again (5 s shipped).
    admission.POLL_SECONDS = args.poll
    conf = types.SimpleNamespace(conductor=types.SimpleNamespace(
        lease_seconds=30, rollback_attempts=3, **json.loads(args.limits)))
    clients = types.SimpleNamespace(
        admin_context=cs2os_context.get_admin_context())
    db = plan_sim.RecordingDatabase(api.Database(args.db), recorder)

    def make_context(migration, owner):
        return flow_context.FlowContext(migration, db, conf, clients,
                                        owner=owner)
    engine = conductor_engine.Engine(
        db, "sim-conductor-%d" % args.index, args.workers,
        conf.conductor.lease_seconds, make_context)
    mgr = manager.ConductorManager(
        db, engine, find_vm=fleet.find_vm, preflight=fleet.preflight,
        select_vms=fleet.select_vms)
    ctxt = cs2os_context.RequestContext(user_id="sim-user",
                                        project_id="sim-ops")
    cpu_before = _cpu_seconds()
    engine.start()
    # Plans interleave the fleet: each spans every host and pool.
    plan = mgr.create_plan(ctxt, {
        "name": "sim-wave-%d" % args.index,
        "vms": [{"vm": vm["id"], "overrides": {"host": vm["compute"]}}
                for vm in fleet.vms[args.index::args.conductors]]})
    mgr.start_plan(ctxt, plan["id"])
    stop.wait()
    engine.stop()
    with open(args.out, "w") as f:
        json.dump({"plan_id": plan["id"], "conductor": engine.name,
                   "cpu_seconds": _cpu_seconds() - cpu_before,
                   "recorded": recorder.dump()}, f)
    return 0


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    raise SystemExit(main())
