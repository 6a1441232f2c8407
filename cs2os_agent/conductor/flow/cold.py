"""A cold migration: the CloudStack VM stops, then its overlay is copied.

The steps in order (common/states.py COLD_STEPS names them for the API and
the CLI), each in the module of what it acts on, and how each is undone, in
the order a rollback runs:

validate        prepare.py   the VM, its overlay's header, flavor, NIC plan
image           image.py     the template B in Glance (once per template)
ports           prepare.py   Neutron ports with the VM's MACs and IPs
boot            prepare.py   the Nova server on B, stopped through Nova
volumes         datadisks.py a Cinder volume per data disk, attached
stop_source     source.py    CloudStack stops the VM
sync            disk.py      the agent copies the overlay, rebased onto D
sync_volumes    datadisks.py the agent writes each data disk into its volume
swap            disk.py      the agent puts it in place of Nova's disk
start           commit.py    the commit point, then Nova starts the server
cleanup         disk.py      after the commit: the agent drops Nova's disk
retire_source   source.py    after the commit: unmanage or destroy the VM
"""

from cs2os_agent.conductor.flow import commit
from cs2os_agent.conductor.flow import datadisks
from cs2os_agent.conductor.flow import disk
from cs2os_agent.conductor.flow import image
from cs2os_agent.conductor.flow import prepare
from cs2os_agent.conductor.flow import source

STEPS = [
    ("validate", prepare.validate),
    ("image", image.image),
    ("ports", prepare.ports),
    ("boot", prepare.boot),
    ("volumes", datadisks.volumes),
    ("stop_source", source.stop_source),
    ("sync", disk.sync),
    ("sync_volumes", datadisks.sync),
    ("swap", disk.swap),
    ("start", commit.start),
    ("cleanup", disk.cleanup),
    ("retire_source", source.retire_source),
]

ROLLBACK = [
    ("undo_swap", disk.undo_swap),
    ("undo_boot", prepare.undo_boot),
    ("undo_volumes", datadisks.undo),
    ("undo_ports", prepare.undo_ports),
    ("undo_stop_source", source.undo_stop_source),
]
