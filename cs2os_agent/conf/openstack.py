"""[openstack]: the credentials cs2os-conductor uses for Glance and Nova.

Same shape as Nova's [neutron] or Ironic's [service_catalog] sections:
keystoneauth's auth and session options, so any auth plugin works.
"""

import copy

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

GROUP = "openstack"

openstack_group = cfg.OptGroup(
    GROUP,
    title="OpenStack service credentials",
    help="Keystone credentials of the service user cs2os-conductor acts "
    "as; it needs the admin role (booting on a given host and reading a "
    "server's compute host are admin-only in Nova).",
)

openstack_opts = [
    cfg.StrOpt("region_name", help="Region of Glance and Nova."),
    cfg.StrOpt(
        "interface",
        default="internal",
        choices=["public", "internal", "admin"],
        help="Endpoint interface to use from the catalog.",
    ),
]


def register_opts(conf):
    conf.register_group(openstack_group)
    conf.register_opts(openstack_opts, group=openstack_group)
    ks_loading.register_session_conf_options(conf, GROUP)
    ks_loading.register_auth_conf_options(conf, GROUP)


def list_opts():
    opts = copy.deepcopy(openstack_opts)
    opts += ks_loading.get_session_conf_options()
    opts += ks_loading.get_auth_common_conf_options()
    opts += ks_loading.get_auth_plugin_conf_options("password")
    # The generator wants each option once.
    seen, unique = set(), []
    for opt in opts:
        if opt.dest not in seen:
            seen.add(opt.dest)
            unique.append(opt)
    return {openstack_group: unique}
