from oslo_config import cfg

agent_group = cfg.OptGroup(
    "agent",
    title="cs2os-agent options",
    help="Options of the agent that runs on every nova-compute node.",
)

agent_opts = [
    cfg.StrOpt(
        "instances_path",
        default="/var/lib/nova/instances",
        help="Nova's instances_path on this node. The agent only touches "
        "files under <instances_path>/<instance uuid>/ and refuses a root "
        "disk that lives anywhere else.",
    ),
    cfg.ListOpt(
        "allowed_source_roots",
        default=[],
        sample_default="/mnt",
        help="Directories an overlay may be read from with the 'path' "
        "transport, e.g. where CloudStack NFS primary storage is mounted on "
        "this node. Symlinks are resolved before the check. Empty means the "
        "'path' transport is refused.",
    ),
    cfg.StrOpt(
        "ceph_keyring_dir",
        sample_default="/etc/ceph",
        help="Where ceph.client.<user>.keyring files are, for writing a "
        "data disk into an RBD Cinder volume whose libvirt secret is "
        "private (private='yes'). Unset: only the libvirt secret Nova "
        "names in the domain XML is read (Nova and DevStack define it "
        "private='no').",
    ),
    cfg.IntOpt(
        "progress_interval",
        default=5,
        min=1,
        help="Seconds between progress reports (log line and report to the "
        "conductor) while an overlay is copied.",
    ),
]


def register_opts(conf):
    conf.register_group(agent_group)
    conf.register_opts(agent_opts, group=agent_group)


def list_opts():
    return {agent_group: agent_opts}
