"""A configuration of its own for each test of the commands."""

import pytest
from oslo_config import cfg

from cs2os_agent import conf as cs2os_conf
from cs2os_agent.api import policy


@pytest.fixture
def make_config(tmp_path):
    """make(text=""): a ConfigOpts parsed from a file holding ``text``."""
    made = []

    def make(text=""):
        path = tmp_path / ("cs2os-%d.conf" % len(made))
        path.write_text(text)
        conf = cfg.ConfigOpts()
        for module in cs2os_conf.ALL_MODULES:
            module.register_opts(conf)
        conf(["--config-file", str(path)], project="cs2os",
             default_config_files=[])
        conf.path = path
        made.append(conf)
        return conf

    policy.reset()
    yield make
    policy.reset()
    for conf in made:
        # Option groups are shared between ConfigOpts objects.
        conf.reset()
