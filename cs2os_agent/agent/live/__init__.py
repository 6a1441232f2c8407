"""Live mode's foundation: a running guest moved into Nova's domain.

The guest's RAM and CPU state move from the CloudStack domain A into
Nova's domain B (Nova's name and instance UUID) on the Nova compute host,
without a reboot.  libvirt cannot change a domain's UUID in a migration,
so B is restored from a stream: a libvirt save-image header carrying B's
live XML (:mod:`.header`), followed by A's live QEMU migration stream,
written into a FIFO that ``virDomainRestore`` reads (:mod:`.move`).  B's
live XML is A's guest ABI with Nova's identity (:mod:`.abi`); what the
move depends on is checked before anything changes (:mod:`.preflight`).

Across hosts a first hop comes before (:mod:`.hop`): libvirt's own live
migration of A to the Nova compute host under a temporary name, A's UUID
kept, its disks copied onto Nova's instance paths (flags and params:
:mod:`.hop_spec`); :func:`.hop.hop_back` is its undo.

The agent's RPC API 1.6 drives them (``agent/live_rpc.py``; the look-ups
in :mod:`.livehost`, the begin/finish handshake in :mod:`.handshake`, the
record a restarted agent reads in :mod:`.state`).
"""
