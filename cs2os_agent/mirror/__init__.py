"""Warm migration building blocks: the source keeps running while its disk
is mirrored to the compute node.

- :mod:`.qsd`: a qemu-storage-daemon exporting the fresh overlay T (on
  Nova's base D) over NBD, driven over QMP.
- :mod:`.tunnel`: the SSH connection the agent opens to the CloudStack KVM
  host so that the source QEMU there reaches that export.
- :mod:`.blockcopy`: the source side, libvirt's block copy into the export.
- :mod:`.baseproof`: proof that D and the template B are the same bytes
  before a shallow mirror relies on it.
- :mod:`.target`: the agent's per-migration target (T + daemon + tunnel).

The steps, flags and pitfalls were measured first in
shared/recipes/live-mirror (README "Findings").
"""
