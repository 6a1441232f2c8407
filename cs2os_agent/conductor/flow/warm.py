"""A warm migration: the steps, in order, and how each is undone.

The CloudStack VM runs on while its disk's top layer A is mirrored into a
fresh overlay T on Nova's base D (the agent exports T; libvirt's block copy
on the CloudStack KVM host writes into it: shallow, synchronous writes).
Once the mirror is READY every guest write lands on both sides; the
cutover then freezes the source, ends the job and the flow goes on as the
cold one does from the swap.

validate        mirroring.py  the cold checks (prepare.py), plus: the VM runs,
                              its domain and root disk on the KVM host
image           image.py      the cold step, plus a digest of the template's
                              guest view (what proves D == B to the agent)
ports, boot     prepare.py    the cold steps
mirror          mirroring.py  prepare T on the agent (D == B proven there
                              first), start the block copy, until READY
ready           mirroring.py  READY; with cutover "manual" it stays so
                              (progress, failures watched) until the
                              operator's cutover action
cutover         cutover.py    "shutdown" (default): CloudStack stops the VM
                              while the synchronous mirror keeps every write
                              on both sides, and QEMU's events prove the job
                              stayed whole until the domain ended; "force":
                              suspend the source, end the job, no pivot
finish          mirroring.py  the agent closes T (durable) and stages it
swap            disk.py       the cold step
start           commit.py     the commit point; Nova starts the server (the
                              downtime ends here)
stop_source     source.py     CloudStack's view catches up: its stop job
                              waited for, a frozen VM stopped forced
cleanup         disk.py       the cold step
retire_source   source.py     the cold step

libvirt 9.0's block job events cannot prove the clean cutover: a job
failure shortly before the domain's end is dropped, not delivered
(measured: the target's daemon killed, a guest write that then completed
on the source only, the domain destroyed right after: no FAILED event,
though it came 0.13 s after the write with the domain left running).
QEMU's own BLOCK_JOB_ERROR did arrive, through libvirt's QEMU monitor
event API: the clean cutover rests on those.

The source's disk chain is never written by cs2os: before the Nova server
is started, any failure or cancel resumes (or leaves running) the
CloudStack VM on it, exactly as it was.
"""

from cs2os_agent.conductor.flow import commit
from cs2os_agent.conductor.flow import cutover
from cs2os_agent.conductor.flow import datadisks
from cs2os_agent.conductor.flow import disk
from cs2os_agent.conductor.flow import image
from cs2os_agent.conductor.flow import mirroring
from cs2os_agent.conductor.flow import prepare
from cs2os_agent.conductor.flow import source

STEPS = [
    ("validate", mirroring.validate),
    ("image", image.image_with_guest_digest),
    ("ports", prepare.ports),
    ("boot", prepare.boot),
    ("mirror", mirroring.mirror),
    ("ready", mirroring.ready),
    ("cutover", cutover.cutover),
    ("finish", mirroring.finish),
    ("swap", disk.swap),
    ("start", commit.start_warm),
    ("stop_source", source.stop_after_cutover),
    ("cleanup", disk.cleanup),
    ("retire_source", source.retire_source),
]

ROLLBACK = [
    ("undo_job", cutover.undo_job),
    ("undo_target", mirroring.undo_target),
    ("undo_swap", disk.undo_swap),
    ("undo_boot", prepare.undo_boot),
    ("undo_volumes", datadisks.undo),
    ("undo_ports", prepare.undo_ports),
    ("undo_source", source.undo_source),
]
