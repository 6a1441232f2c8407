"""The keys of a migration's ``resources`` record, in one place.

``resources`` holds what the steps created or changed, each written before
a step relies on it: a conductor that resumes the migration, and the
rollback, act on what it says.  FlowContext writes and reads only the keys
declared here (a misspelt key fails the first test that touches it instead
of being written and never read); records written by an older version may
hold other keys, which are kept but not read.
"""

# key: (the step that writes it, what it records)
KEYS = {
    # validate
    "nic_plan": ("validate", "one entry per CloudStack NIC: network, MAC, "
                 "IP, subnet, port name"),
    "flavor_id": ("validate", "the Nova flavor"),
    "flavor_name": ("validate", "the Nova flavor's name"),
    "overlay_source": ("validate", "where the agent reads the overlay A "
                       "(transport and path)"),
    "overlay_format": ("validate", "qcow2, or raw for a root volume that is "
                       "one raw image (RBD primary storage)"),
    "overlay_virtual_size": ("validate", "A's virtual size, bytes"),
    "template_path": ("validate", "the template B the overlay's header "
                      "names; None for a volume without a backing file"),
    "layers": ("validate", "the files between the overlay and the "
               "template (transport sources, top-down): the agent merges "
               "them into the overlay"),
    "source_state_at_start": ("validate", "CloudStack's VM state then"),
    "data_disks": ("validate", "one entry per CloudStack data disk, in "
                   "device order: its chain (transport sources, top-down), "
                   "size, volume type"),
    "kvm_host": ("validate (warm)", "the KVM host that runs the VM"),
    "source_domain": ("validate (warm)", "the VM's libvirt domain there"),
    "source_disk": ("validate (warm)", "its root disk's target (vda)"),
    "socket_owner": ("validate (warm)", "uid:gid of the source QEMU, for "
                     "the mirror's socket"),
    # image
    "image_id": ("image", "the Glance image of B (or the placeholder)"),
    "base_proof": ("image (warm)", "B's guest-view digest: what the agent "
                   "proves D against"),
    # ports, boot
    "ports": ("ports", "the Neutron ports made, by NIC index"),
    "security_groups": ("ports", "the Neutron security groups this "
                        "migration created"),
    "server_id": ("boot", "the Nova server"),
    "host": ("boot", "its compute host (the agent's)"),
    "volumes": ("volumes", "the Cinder volumes made for the data disks: "
                "{cloudstack_id, volume_id}; a rollback deletes them"),
    # the source VM
    "source_stopped": ("stop_source, cutover", "cs2os stopped the VM: a "
                       "rollback starts it again"),
    "source_suspended": ("cutover (force)", "cs2os paused the VM's domain: "
                         "a rollback resumes it"),
    "source_stop_job": ("cutover (shutdown)", "CloudStack's stop job, "
                        "waited for before the VM is started or retired"),
    "source_down_at": ("cutover", "when the source stopped serving"),
    # the disk
    "swapped": ("swap", "the agent may have swapped the disk: a rollback "
                "restores Nova's"),
    # the mirror (warm)
    "mirror_prepared": ("mirror", "the agent may hold a target: a rollback "
                        "aborts it"),
    "mirror": ("mirror", "the target: export, path, socket, daemon and "
               "tunnel PIDs"),
    "mirror_started": ("mirror", "the block copy may run: a rollback ends "
                       "it"),
    "mirror_ready": ("mirror", "the job reached READY"),
    "mirror_finished": ("finish", "the agent closed and staged T"),
    "warm_disks": ("validate (warm)", "each data disk's target in the "
                   "source domain (vdb...) and virtual size, device order"),
    "volume_mirrors": ("mirror", "each data disk's target on the agent: "
                       "volume, export, daemon and tunnel PIDs; a rollback "
                       "aborts them"),
    "cutover_started": ("cutover", "when the cutover began; None if not"),
    "cutover_method": ("cutover", "shutdown or force"),
    "cutover_done": ("cutover", "the target is complete"),
    # the live flow (live.py)
    "ha_enabled_before": ("hop (live)", "CloudStack's haenable of the VM "
                          "before cs2os turned it off"),
    "ha_disabled": ("hop (live)", "cs2os turned the VM's HA off: a "
                    "rollback before the commit turns it on again if it "
                    "was on"),
    "hop_started": ("hop (live)", "the guest may have hopped to the Nova "
                    "host: a rollback hops it back"),
    "move_begun": ("move (live)", "the agent may hold B waiting for the "
                   "stream: a rollback aborts the move"),
    # the commit
    "committed": ("start", "kept in step with the record's committed "
                  "column, for records read as a whole"),
    "start_requested_at": ("start (warm)", "when Nova was asked to start "
                           "the server: the downtime's end"),
}


def check(names):
    """Refuse a key that is not declared above."""
    unknown = sorted(set(names) - KEYS.keys())
    if unknown:
        raise KeyError("undeclared resource key(s) %s: declare them in "
                       "cs2os_agent/conductor/flow/resources.py"
                       % ", ".join(unknown))


def _read_only(self, *args, **kwargs):
    raise TypeError("a migration's resources are written through "
                    "FlowContext.resource(), which records them first")


class Resources(dict):
    """A migration's resources as the steps read them: a read-only dict
    (a change made here would never reach the record) whose ``[]`` and
    ``get`` refuse undeclared keys."""

    __setitem__ = __delitem__ = _read_only
    update = pop = popitem = setdefault = clear = _read_only

    def __getitem__(self, key):
        check((key,))
        return super().__getitem__(key)

    def get(self, key, default=None):
        check((key,))
        return super().get(key, default)
