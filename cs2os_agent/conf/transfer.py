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


def register_opts(conf):
    conf.register_group(transfer_group)
    conf.register_opts(transfer_opts, group=transfer_group)


def list_opts():
    return {transfer_group: transfer_opts}
