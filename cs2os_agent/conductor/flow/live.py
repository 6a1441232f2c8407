"""A live migration: the steps, in order, and how each is undone.

The CloudStack VM's guest moves into Nova's domain without a reboot: its
RAM and CPU state move with it.  The disk goes as in warm mode onto a
fresh overlay T on Nova's base D (D == B proven first); the running guest
hops (a libvirt live migration, disk copied along) from the CloudStack KVM
host to the Nova host under a temporary name, then the agent loads it
into Nova's own domain B (same UUID as the server) from a live migration
stream, and destroys the temporary domain only once B runs.

validate        live.py        warm's checks (mirroring.py), plus the live
                livesteps.py   refusals: data disks, a root volume on RBD
                               primary storage, layers under the root
                               volume, cutover "manual"; with live_fallback
                               a refusal switches the migration to warm
                               mode (an event says why) and the warm flow
                               runs instead
image           image.py       warm's step (the guest-view digest that
                               proves D == B to the agent)
ports, boot     prepare.py     the cold steps (B defined, shut off)
target          livesteps.py   the agent stages T on D (D == B proven),
                               then swaps it in as Nova's disk
hop             livesteps.py   CloudStack HA off for the VM (its old value
                               recorded first), then the agent hops the
                               running guest onto the Nova host
move            livesteps.py   the agent starts B waiting for the stream
                               (paused); Nova's record set ACTIVE
                               (os-resetState, so its power-state sync
                               leaves B alone); the commit point; the agent
                               streams the guest into B, B runs, the
                               temporary domain is destroyed
stop_source     source.py      CloudStack's view catches up: the VM, whose
                               domain left its host, stopped forced
cleanup         disk.py        the cold step
retire_source   source.py      the cold step

Never two live copies: the agent destroys the temporary domain only after
B runs; if B fails to load, the temporary domain runs on (LiveFailed), the
commit is taken back and the rollback hops the guest back onto its
CloudStack host, leaving nothing in Nova.  An outcome the agent cannot
tell (LiveIncomplete) stays committed: the migration fails naming it, and
a retry asks the agent again (finish_live_move answers what happened).
"""

from cs2os_agent.conductor.flow import disk
from cs2os_agent.conductor.flow import image
from cs2os_agent.conductor.flow import livesteps
from cs2os_agent.conductor.flow import prepare
from cs2os_agent.conductor.flow import source

STEPS = [
    ("validate", livesteps.validate),
    ("image", image.image_with_guest_digest),
    ("ports", prepare.ports),
    ("boot", prepare.boot),
    ("target", livesteps.target),
    ("hop", livesteps.hop),
    ("move", livesteps.move),
    ("stop_source", source.stop_after_cutover),
    ("cleanup", disk.cleanup),
    ("retire_source", source.retire_source),
]

ROLLBACK = [
    ("undo_move", livesteps.undo_move),
    ("undo_hop", livesteps.undo_hop),
    ("undo_target", disk.undo_swap),
    ("undo_boot", prepare.undo_boot),
    ("undo_ports", prepare.undo_ports),
    ("undo_source", livesteps.undo_source),
]
