from oslo_config import cfg

transfer_group = cfg.OptGroup(
    "transfer",
    title="Overlay transfer options",
    help="How the agent moves CloudStack overlays onto this node.",
)

transfer_opts = [
    cfg.IntOpt(
        "max_bandwidth_mbps",
        default=0,
        min=0,
        help="Upper bound on the overlay copy rate of one migration, in "
        "megabits per second. 0 means unlimited.",
    ),
    cfg.IntOpt(
        "checkpoint_mib",
        default=256,
        min=1,
        help="Every this many MiB a running copy is fsynced and its "
        "position recorded, so a copy interrupted by an agent crash or a "
        "power loss resumes there instead of starting over.",
    ),
    cfg.IntOpt(
        "stall_timeout",
        default=120,
        min=5,
        help="Seconds without a single byte arriving after which a remote "
        "copy (ssh, nfs) is given up as stalled.",
    ),
    cfg.IntOpt(
        "chunk_size_kib",
        default=8192,
        min=64,
        max=262144,
        help="Size of one copy step in KiB. The agent holds at most one "
        "chunk in memory per running copy, so memory use does not grow with "
        "the disk size.",
    ),
]


ssh_opts = [
    cfg.StrOpt(
        "ssh_private_key_file",
        default="/etc/cs2os/ssh/id_ed25519",
        help="Private key the agent logs in to CloudStack KVM hosts with "
        "(the 'ssh' transport). No ssh-agent and no password is used.",
    ),
    cfg.StrOpt(
        "ssh_known_hosts_file",
        default="/etc/cs2os/ssh/known_hosts",
        help="known_hosts file holding the host keys of the CloudStack KVM "
        "hosts. A host whose key is not in it, or whose key changed, is "
        "refused.",
    ),
    cfg.StrOpt(
        "ssh_user",
        default="root",
        help="User on the CloudStack KVM host when the source names none.",
    ),
    cfg.IntOpt(
        "ssh_connect_timeout",
        default=10,
        min=1,
        help="Seconds to wait for an SSH connection to be established.",
    ),
    cfg.ListOpt(
        "remote_source_roots",
        default=["/mnt"],
        help="Directories on a CloudStack KVM host (ssh) or below an NFS "
        "export (nfs) an overlay may be read from. CloudStack mounts NFS "
        "primary storage at /mnt/<pool uuid>.",
    ),
]

nfs_opts = [
    cfg.StrOpt(
        "nfs_version",
        default="auto",
        choices=["auto", "3", "4"],
        help="NFS protocol version for the 'nfs' transport; auto lets the "
        "client negotiate.",
    ),
]


def register_opts(conf):
    conf.register_group(transfer_group)
    conf.register_opts(transfer_opts + ssh_opts + nfs_opts,
                       group=transfer_group)


def list_opts():
    return {transfer_group: transfer_opts + ssh_opts + nfs_opts}
