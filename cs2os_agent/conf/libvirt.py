from oslo_config import cfg

libvirt_group = cfg.OptGroup(
    "libvirt",
    title="libvirt options",
    help="How the agent reaches the libvirtd that runs Nova's domains.",
)

libvirt_opts = [
    cfg.StrOpt(
        "connection_uri",
        default="qemu:///system",
        help="libvirt connection URI; the same one nova-compute uses on "
        "this node.",
    ),
]


def register_opts(conf):
    conf.register_group(libvirt_group)
    conf.register_opts(libvirt_opts, group=libvirt_group)


def list_opts():
    return {libvirt_group: libvirt_opts}
