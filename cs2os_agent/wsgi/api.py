"""cs2os-api under a web server: the module form
``cs2os_agent.wsgi.api:application`` (uwsgi ``module =``, DevStack's
write_uwsgi_config, mod_wsgi, gunicorn).

The configuration comes from /etc/cs2os/cs2os.conf, or from the files in
$CS2OS_CONFIG_FILES (comma-separated), since a web server passes no
command-line arguments.  The application may be mounted at a path prefix
(DevStack: /cs2os): it routes on PATH_INFO and builds its links from
SCRIPT_NAME.

Each worker arms its Guru Meditation Report as the standalone cs2os-api
does (common/gmr.py).  Under uwsgi the signals are the master's, so
``[oslo_reports] file_event_handler`` (a watched file) is the trigger
that reaches the workers, as with Nova's WSGI applications.
"""

import os

from oslo_log import log as logging

from cs2os_agent import conf
from cs2os_agent.api import service
from cs2os_agent.common import config
from cs2os_agent.common import gmr
from cs2os_agent.common import service as common_service

CONF = conf.CONF


def init_application():
    files = [f for f in os.environ.get("CS2OS_CONFIG_FILES", "").split(",")
             if f]
    config.parse_args([], default_config_files=files or None)
    logging.setup(CONF, "cs2os-api")
    gmr.setup(CONF, "cs2os-api")
    app = service.make_application(CONF)
    # After the application: oslo.messaging registers its options there.
    common_service.log_options(CONF)
    return app


application = None
if os.environ.get("CS2OS_WSGI_NO_AUTOLOAD") is None:
    application = init_application()
