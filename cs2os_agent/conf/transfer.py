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
        "(the 'ssh' transport), readable by the agent's user only (mode "
        "0600). No ssh-agent, no password and no ssh_config file is used. "
        "The path must be absolute, without blanks, quotes, '%' or '~'.",
    ),
    cfg.StrOpt(
        "ssh_known_hosts_file",
        default="/etc/cs2os/ssh/known_hosts",
        help="known_hosts file holding the host keys of the CloudStack KVM "
        "hosts. A host whose key is not in it, or whose key changed, is "
        "refused; the agent never adds or updates a key. Add a host with "
        "'ssh-keyscan -p PORT HOST >> FILE' after checking the key's "
        "fingerprint out of band. The path must be absolute, without "
        "blanks, quotes, '%' or '~'.",
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
        help="Seconds to wait for an SSH connection to be established. "
        "A connection that stops answering is dropped after about a minute "
        "(keepalives every 15 s).",
    ),
    cfg.ListOpt(
        "remote_source_roots",
        default=["/mnt"],
        help="Directories on a CloudStack KVM host an overlay may be read "
        "from with the 'ssh' transport. CloudStack mounts NFS primary "
        "storage at /mnt/<pool uuid>. (NFS sources are confined by "
        "nfs_allowed_exports.)",
    ),
]

nfs_opts = [
    cfg.StrOpt(
        "nfs_version",
        default="auto",
        choices=["auto", "3", "4"],
        help="NFS protocol version for the 'nfs' transport; auto tries "
        "NFSv4 (one port, no portmapper) and then NFSv3. A request's "
        "'version' key overrides it.",
    ),
    cfg.PortOpt(
        "nfs_port",
        default=0,
        help="TCP port of the NFS service on the NFS servers the 'nfs' "
        "transport reads from. 0 means the standard one: 2049 for NFSv4, "
        "the portmapper's answer for NFSv3.",
    ),
    cfg.PortOpt(
        "nfs_mount_port",
        default=0,
        help="TCP port of the MOUNT service (NFSv3 only). 0 asks the "
        "server's portmapper (rpcbind, port 111).",
    ),
    cfg.IntOpt(
        "nfs_uid",
        min=0,
        help="AUTH_SYS user id the 'nfs' transport presents to the server. "
        "Unset: the agent process's own uid. The export must let it read "
        "the volume files (CloudStack's KVM hosts read them as root, so an "
        "export for them usually has no_root_squash).",
    ),
    cfg.IntOpt(
        "nfs_gid",
        min=0,
        help="AUTH_SYS group id the 'nfs' transport presents. Unset: the "
        "agent process's own gid.",
    ),
    cfg.IntOpt(
        "nfs_connections",
        default=3,
        min=1,
        max=16,
        help="NFS connections (libnfs contexts, each its own NFSv4 client) "
        "one copy reads on at the same time, one 1 MiB READ each, written "
        "into the copy at their offsets; 1 reads strictly in order, one "
        "READ at a time. Measured against nfs-ganesha on the same 2-core "
        "machine (NFSv4, 600 MiB, durable copies, medians): 1 connection "
        "645 MB/s, 2 766, 3 817, 4 799, where nfs-cp made 634 without "
        "fsync. More connections cost the client a little more CPU. "
        "Checkpoints only ever record the contiguous start of the copy, so "
        "a resumed copy is exact with any value.",
    ),
    cfg.ListOpt(
        "nfs_allowed_exports",
        default=[],
        help="NFS exports the 'nfs' transport may read from, each "
        "'/export/path' (any server) or 'server:/export/path'. Empty allows "
        "every export the NFS server grants this node. A request's path is "
        "always relative to its export and can never leave it ('..' is "
        "refused); [transfer] remote_source_roots does not apply to nfs.",
    ),
]

rbd_opts = [
    cfg.StrOpt(
        "rbd_user",
        default="cs2os",
        help="Cephx user (without 'client.') the 'rbd' transport reads "
        "CloudStack's RBD primary storage as. The agent only reads, so "
        "give it a user of its own that can do no more: ceph auth "
        "get-or-create client.cs2os mon 'profile rbd' osd 'profile "
        "rbd-read-only pool=POOL' (also naming the pools of the templates "
        "CloudStack clones volumes from, if they differ), rather than "
        "copying client.admin's key, which can delete every pool, onto "
        "every compute node.",
    ),
    cfg.StrOpt(
        "rbd_keyring",
        default="/etc/cs2os/ceph/ceph.client.cs2os.keyring",
        help="Keyring file holding rbd_user's cephx key, readable by the "
        "agent's user only. The key is read from it by librados and never "
        "appears on a command line or in a log.",
    ),
    cfg.StrOpt(
        "rbd_conf",
        help="Optional ceph.conf read before the 'rbd' transport connects "
        "(for settings such as ms_mode or auth options). Unset: no "
        "configuration file at all, not even /etc/ceph/ceph.conf. The "
        "monitors always come from the request (CloudStack's storage pool), "
        "the user and keyring from rbd_user and rbd_keyring.",
    ),
    cfg.IntOpt(
        "rbd_connect_timeout",
        default=10,
        min=1,
        help="Seconds the 'rbd' transport waits for the Ceph monitors to "
        "answer and authenticate it. A read that the cluster does not "
        "answer fails after stall_timeout.",
    ),
]


def register_opts(conf):
    conf.register_group(transfer_group)
    conf.register_opts(transfer_opts + ssh_opts + nfs_opts + rbd_opts,
                       group=transfer_group)


def list_opts():
    return {transfer_group: transfer_opts + ssh_opts + nfs_opts
            + rbd_opts}
