"""Command-line and config-file parsing shared by every cs2os process."""

import os

from oslo_log import log as logging

import cs2os_agent
from cs2os_agent import conf

DEFAULT_CONFIG_FILE = "/etc/cs2os/cs2os.conf"


def parse_args(argv, default_config_files=None):
    """Parse ``argv`` (without the program name) into the global CONF.

    ``/etc/cs2os/cs2os.conf`` is read when it exists; ``--config-file``
    and ``--config-dir`` override it.
    """
    if default_config_files is None:
        default_config_files = [
            f for f in (DEFAULT_CONFIG_FILE,) if os.path.exists(f)
        ]
    logging.register_options(conf.CONF)
    conf.CONF(
        argv,
        project="cs2os",
        version=cs2os_agent.__version__,
        default_config_files=default_config_files,
    )
