"""What the conductor does on the CloudStack KVM host, over libvirt.

Only the conductor imports this package; the agent never touches the
source host's libvirt.

- :mod:`.kvmhost`: the connection to the host's libvirtd, the source
  domain's state and root disk.
- :mod:`.blockcopy`: libvirt's shallow block copy of the source's top layer
  into the agent's NBD export, and the job's end.
- :mod:`.sourceend`: the clean cutover's proof that the source guest shut
  down with the job still mirroring (QMP events).

libvirt's own setup and the domain-state names are
:mod:`cs2os_agent.virt`, shared with the agent.

The contract with the agent's side (export name, destination XML) is in
:mod:`cs2os_agent.common.nbd`.
"""
