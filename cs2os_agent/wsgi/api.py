"""cs2os-api under a web server: ``uwsgi --module cs2os_agent.wsgi.api``.

The configuration comes from /etc/cs2os/cs2os.conf, or from the files in
$CS2OS_CONFIG_FILES (comma-separated), since a web server passes no
command-line arguments.
"""

import os

from oslo_log import log as logging

from cs2os_agent import conf
from cs2os_agent.api import service
from cs2os_agent.common import config

CONF = conf.CONF


def init_application():
    files = [f for f in os.environ.get("CS2OS_CONFIG_FILES", "").split(",")
             if f]
    config.parse_args([], default_config_files=files or None)
    logging.setup(CONF, "cs2os-api")
    return service.make_application(CONF)


application = None
if os.environ.get("CS2OS_WSGI_NO_AUTOLOAD") is None:
    application = init_application()
