"""The agent's side of a warm migration: the target the source mirrors into.

- :mod:`.qsd`: a qemu-storage-daemon exporting the fresh overlay T (on
  Nova's base D) over NBD, driven over QMP.
- :mod:`.tunnel`: the SSH connection the agent opens to the CloudStack KVM
  host so that the source QEMU there reaches that export.
- :mod:`.writebehind`: keeps T's dirty pages flowing to disk so that the
  cutover's final fsync is short.
- :mod:`.baseproof`: proof that D and the template B are the same bytes
  before a shallow mirror relies on it.
- :mod:`.request`: the ``prepare_mirror`` call's source, checked.
- :mod:`.target`: the agent's per-migration target (T + daemon + tunnel).
- :mod:`.staging`: from a ``prepare_mirror`` request to the staged
  overlay (prepare, finish, abort), as ``overlay.stage`` for a copy.
- :mod:`.qsdgraph`: the daemon's command line and block graph.

The source side (libvirt's block copy on the CloudStack host) is the
conductor's: :mod:`cs2os_agent.sourcehost`.  The steps, flags and pitfalls
were measured first in shared/recipes/live-mirror (its README, "Findings").
"""
