from oslo_config import cfg

live_group = cfg.OptGroup(
    "live",
    title="Live migration options (agent)",
    help="The agent's side of a live migration: it opens the CloudStack "
    "KVM host's libvirtd, migrates the running guest onto this host under "
    "a temporary name (libvirt's own live migration, driven by the agent "
    "on its two connections), then moves it into Nova's domain.",
)

live_opts = [
    cfg.StrOpt(
        "kvm_libvirt_uri",
        default="qemu+ssh://{host}/system",
        sample_default="qemu+ssh://root@{host}/system?"
        "keyfile=/etc/cs2os/ssh/id_ed25519&"
        "known_hosts=/etc/cs2os/ssh/known_hosts",
        help="libvirt URI of a CloudStack KVM host, as the agent opens it "
        "for the first hop of a live migration. '{host}' is replaced with "
        "the host's address as CloudStack lists it. Verify the host key: "
        "with known_hosts=FILE libvirt runs OpenSSH trusting that file "
        "alone (add a host with 'ssh-keyscan HOST >> FILE' once its "
        "fingerprint is checked out of band); no_verify and "
        "qemu+libssh are refused, as for [cloudstack] kvm_libvirt_uri. "
        "The KVM host's libvirtd never needs credentials for this host's.",
    ),
    cfg.StrOpt(
        "migrate_address",
        help="Address of this host that the KVM host's QEMU connects to "
        "for the migration stream and the disk copy (libvirt's "
        "listen_address and migrate_uri; the port comes from this host's "
        "qemu.conf migration_port_min..migration_port_max). Unset: "
        "libvirt's default (this host's name as libvirtd resolves it).",
    ),
    cfg.IntOpt(
        "move_wait_seconds",
        default=60,
        min=1,
        help="Longest wait, in seconds, between begin_live_move (Nova's "
        "domain paused, waiting for the guest's state) and the "
        "conductor's finish_live_move or abort_live_move; when it passes "
        "the move is undone and the guest runs on in the temporary "
        "domain. A begin_live_move call may ask for less.",
    ),
    cfg.IntOpt(
        "hop_timeout",
        default=600,
        min=1,
        help="Seconds the first hop (libvirt's live migration of the guest "
        "onto this host) may take before it is aborted; the guest then "
        "runs on the KVM host as before.",
    ),
    cfg.StrOpt(
        "run_dir",
        default="/run/cs2os/live",
        help="Directory for the live moves' state files and their "
        "short-lived FIFO and socket (one subdirectory per move, which "
        "QEMU reaches: the directory is made 0711). Keep the path short: "
        "unix socket paths are limited to 107 bytes.",
    ),
]


def register_opts(conf):
    conf.register_group(live_group)
    conf.register_opts(live_opts, group=live_group)


def list_opts():
    return {live_group: live_opts}
