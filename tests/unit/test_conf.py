from oslo_config import cfg

from cs2os_agent import conf
from cs2os_agent.conf import opts


def test_every_group_is_listed_for_the_generator():
    groups = {
        (g.name if isinstance(g, cfg.OptGroup) else g)
        for g, _ in opts.list_opts()
    }
    assert groups == {"DEFAULT", "agent", "libvirt", "transfer", "mirror",
                      "live", "conductor", "api", "database", "openstack",
                      "cloudstack"}


def test_defaults_operators_rely_on():
    c = conf.CONF
    assert c.agent.instances_path == "/var/lib/nova/instances"
    assert c.agent.allowed_source_roots == []
    assert c.libvirt.connection_uri == "qemu:///system"
    assert c.transfer.max_bandwidth_mbps == 0
    assert c.live.kvm_libvirt_uri == "qemu+ssh://{host}/system"
    assert (c.live.move_wait_seconds, c.live.hop_timeout) == (60, 600)
    assert c.host


def test_every_option_has_help():
    for _group, options in opts.list_opts():
        for opt in options:
            assert opt.help, opt.name
