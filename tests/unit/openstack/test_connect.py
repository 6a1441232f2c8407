"""A connection scoped to a migration's target project: the same
credentials, the scope replaced (the token itself is asked for only when
used; tests/e2e/test_ownership.py asks the real Keystone)."""

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from cs2os_agent.conf import openstack as openstack_conf
from cs2os_agent.openstack import client as os_client


def password_conf():
    conf = cfg.ConfigOpts()
    openstack_conf.register_opts(conf)
    conf([], project="cs2os", default_config_files=[])
    group = openstack_conf.GROUP
    conf.set_override("auth_type", "password", group)
    # The plugin's own options, as loading them from a file registers them.
    conf.register_opts(ks_loading.get_auth_plugin_conf_options("password"),
                       group=group)
    for name, value in (("auth_url", "http://127.0.0.1:5/v3"),
                        ("username", "cs2os"), ("password", "pw"),
                        ("project_name", "service"),
                        ("project_domain_name", "Default"),
                        ("user_domain_name", "Default")):
        conf.set_override(name, value, group)
    return conf


def test_the_scope_is_the_target_project_and_nothing_else():
    conf = password_conf()
    own = os_client.connect(conf).session.auth
    assert (own._project_id, own._project_name) == (None, "service")
    scoped = os_client.connect(conf, "p-acme").session.auth
    assert scoped._project_id == "p-acme"
    assert (scoped._project_name, scoped._project_domain_name) == (None,
                                                                   None)
    # Who logs in is unchanged.
    assert (scoped._username, scoped._user_domain_name) == ("cs2os",
                                                            "Default")
