from oslo_config import cfg

mirror_group = cfg.OptGroup(
    "mirror",
    title="Warm migration (live mirror) options",
    help="The agent's side of a warm migration: the qemu-storage-daemon "
    "that exports the mirror target over NBD and the SSH tunnel the source "
    "host reaches it through. The tunnel logs in with the [transfer] ssh_* "
    "key, known_hosts file and user.",
)

mirror_opts = [
    cfg.StrOpt(
        "run_dir",
        default="/run/cs2os/mirror",
        help="Directory for the storage daemons' sockets, pid files and "
        "logs, one private (0700) subdirectory per migration. Keep the path "
        "short: unix socket paths are limited to 107 bytes.",
    ),
    cfg.StrOpt(
        "remote_socket_dir",
        default="/tmp",
        help="Directory on the CloudStack KVM host where the tunnel's unix "
        "socket is created (a fresh random name per mirror, handed to the "
        "source QEMU's user). It must exist, be writable by the SSH user and "
        "reachable by QEMU (mind AppArmor/SELinux confinement on the host).",
    ),
    cfg.IntOpt(
        "tunnel_ready_timeout",
        default=30,
        min=1,
        help="Seconds to wait for the SSH tunnel to the source host to be "
        "established (login, forward, socket handed over).",
    ),
]


def register_opts(conf):
    conf.register_group(mirror_group)
    conf.register_opts(mirror_opts, group=mirror_group)


def list_opts():
    return {mirror_group: mirror_opts}
