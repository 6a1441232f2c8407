"""The crash points of the sweep, and the CI subset (CS2OS_FAULTS=ci|full).

Points are those cs2os_agent/common/faultpoints.py names: "<step>:before"
and "<step>:after" around every step of a flow, "rollback:<undo>:before"
and ":after" around every undo step, and the agent's own points.
"""

import collections
import os

from cs2os_agent.common import states
from cs2os_agent.conductor.flow import cold
from cs2os_agent.conductor.flow import live
from cs2os_agent.conductor.flow import warm

MODE = os.environ.get("CS2OS_FAULTS", "ci")
if MODE not in ("ci", "full"):
    raise ValueError("CS2OS_FAULTS must be ci or full, not %r" % MODE)

# fault: what else happens in the case
#   crash        nothing: the crash alone (expected: succeeded)
#   user-start   a user starts the source right before the pre-commit
#                check (expected: failed with SourceNotStopped, rollback)
#   lost-volume  the volume vanishes after CloudStack stopped the VM: the
#                copy fails (expected: failed, rollback starts the VM)
#   cancel       warm, held READY, then cancelled (expected: cancelled)
Case = collections.namedtuple("Case", "flow point process fault")

COLD_STEPS = list(states.COLD_STEPS)
COLD_UNDO = [name for name, _ in cold.ROLLBACK]
WARM_STEPS = list(states.WARM_STEPS)
WARM_UNDO = [name for name, _ in warm.ROLLBACK]
AGENT_POINTS = ["agent:sync_overlay:after", "agent:sync_volume:after",
                "agent:swap_disk:before",
                "agent:swap_disk:after", "agent:restore_disk:before",
                "agent:cleanup:before"]


def _cold_undo_fault(undo):
    # undo_swap and undo_boot have work after a failure at the commit
    # check; undo_ports and undo_stop_source (which starts the VM again)
    # after a failure of the copy.
    return "user-start" if undo in ("undo_swap", "undo_boot") \
        else "lost-volume"


def all_cases():
    cases = []
    for step in COLD_STEPS:
        for when in ("before", "after"):
            cases.append(Case("cold", "%s:%s" % (step, when), "conductor",
                              "crash"))
    for undo in COLD_UNDO:
        for when in ("before", "after"):
            cases.append(Case("cold", "rollback:%s:%s" % (undo, when),
                              "conductor", _cold_undo_fault(undo)))
    for step in WARM_STEPS:
        for when in ("before", "after"):
            cases.append(Case("warm", "%s:%s" % (step, when), "conductor",
                              "crash"))
    for undo in WARM_UNDO:
        for when in ("before", "after"):
            cases.append(Case("warm", "rollback:%s:%s" % (undo, when),
                              "conductor", "cancel"))
    for point in AGENT_POINTS:
        cases.append(Case("cold", point, "agent",
                          "user-start" if "restore" in point else "crash"))
    return cases


# The CI subset (tox -e ci; tox -e faults runs every case): at least one
# point per step kind, both flows, and every invariant exercised, with no
# two cases proving the same thing (each costs ~30 s of a real migration):
#   cold boot:after        Nova: a crash with a server booted, resumed
#   cold sync_volumes:before  Cinder: data-disk volumes made, not yet copied
#                          (so volumes:after, its neighbour, is full-only)
#   cold stop_source:after CloudStack stopped the VM, not yet recorded:
#                          the resume stops it again, then copies
#                          (sync:before resumes into the same overlay
#                          copy: full-only; the agent's copy step kind is
#                          sync_volumes:before's too)
#   cold start:before/after  the commit's two sides
#   cold agent:swap_disk:after  an agent crash mid-commit
#   cold rollback:undo_swap:after  a rollback (invariant 4) after a user
#                          started the source (invariant 6)
#   cold rollback:undo_stop_source:before  a rollback that starts the
#                          CloudStack VM again and deletes the volumes on
#                          its way (so rollback:undo_volumes:before, the
#                          other lost-volume case, is full-only)
#   warm cutover:after     the warm commit
#   warm rollback:undo_job:after  a warm rollback (a cancel while READY)
# Invariants 1, 2 and 5 are checked in every case (check_final and the
# live-copy monitor); 3 by test_two_conductors and the lease epochs here;
# 5 and 6 also by test_races.
CI = [
    ("cold", "boot:after"),
    ("cold", "sync_volumes:before"),
    ("cold", "stop_source:after"),
    ("cold", "start:before"),
    ("cold", "start:after"),
    ("cold", "rollback:undo_swap:after"),
    ("cold", "rollback:undo_stop_source:before"),
    ("warm", "cutover:after"),
    ("warm", "rollback:undo_job:after"),
    ("cold", "agent:swap_disk:after"),
    # Live mode (test_live_crash_points.py): the guest in the temporary
    # domain, its successor moves it into Nova; the commit taken, its
    # successor retires the CloudStack VM; a rollback after a failed move
    # whose successor hops the guest back onto its KVM host.
    ("live", "hop:after"),
    ("live", "move:after"),
    ("live", "rollback:undo_hop:before"),
]


def selected():
    cases = all_cases()
    if MODE == "full":
        return cases
    return [c for c in cases if (c.flow, c.point) in CI]


# Warm migrations of VMs with data disks (tests/faults/test_warm_data_disks.py,
# its own conductor on qemu+ssh): the conductor dies with every disk's job
# READY, or after the one cutover ended them all.  Full suite only unless
# ("warm-datadisks", <point>) is in CI.
WARM_DATA_DISK_POINTS = ["mirror:after", "cutover:after"]


def warm_data_disk_cases():
    return [Case("warm-datadisks", point, "conductor", "crash")
            for point in WARM_DATA_DISK_POINTS]


def warm_data_disk_selected():
    cases = warm_data_disk_cases()
    if MODE == "full":
        return cases
    return [c for c in cases if (c.flow, c.point) in CI]


# Live migrations (tests/faults/test_live_crash_points.py, the KVM host on
# a second libvirtd): every step's two sides (fault "crash": expected
# succeeded), and every undo step's after a move that fails (fault
# "failed-move": the agent's move socket out of QEMU's reach, as in the
# e2e test; expected failed, rolled back to the KVM host).  The live RPC
# has no agent points (faultpoints.reached) yet.
LIVE_STEPS = [name for name, _ in live.STEPS]
LIVE_UNDO = [name for name, _ in live.ROLLBACK]


def live_cases():
    cases = [Case("live", "%s:%s" % (step, when), "conductor", "crash")
             for step in LIVE_STEPS for when in ("before", "after")]
    cases += [Case("live", "rollback:%s:%s" % (undo, when), "conductor",
                   "failed-move")
              for undo in LIVE_UNDO for when in ("before", "after")]
    return cases


def live_selected():
    cases = live_cases()
    if MODE == "full":
        return cases
    return [c for c in cases if (c.flow, c.point) in CI]


def case_id(case):
    return "%s-%s" % (case.flow, case.point.replace(":", "-"))
