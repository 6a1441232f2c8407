"""How the DevStack plugin tests run the plugin (devstack/).

DevStack itself cannot run here (it clones and installs all of OpenStack),
so tests/devstack/run-plugin.sh sources devstack/settings and
devstack/plugin.sh the way stack.sh, unstack.sh and clean.sh do, with
xtrace on, against stand-ins for DevStack's functions
(tests/devstack/stub-functions.sh).  iniset writes the real file; the rest
record their calls.  Every path lies in the test's temporary directory.
``run`` is one such run; the values below are what the tests hand it.
Used by tests/functional/test_devstack_plugin.py and
tests/functional/test_devstack_plugin_settings.py.
"""

import configparser
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "tests" / "devstack" / "run-plugin.sh"
SEP = "\x1f"

SERVICE_HOST = "192.0.2.10"  # the harness's default
# cs2os-api under uwsgi behind Apache (the default), and standalone
# (CS2OS_USE_UWSGI=False).
API_URL = "http://%s/cs2os" % SERVICE_HOST
STANDALONE_API_URL = "http://%s:9877" % SERVICE_HOST
CLOUDSTACK_ENDPOINT = "https://cloudstack.test:8443/client/api"
CLOUDSTACK_API_KEY = "cs-api-key-0f9e31"
# '&' and '\' are what DevStack's iniset must escape for sed.
CLOUDSTACK_SECRET_KEY = r"cs-secret-7Q&x\y"
PASSWORDS = {
    "SERVICE_PASSWORD": "svc-pass-5a1c",
    "DATABASE_PASSWORD": "db-pass-62d0",
    "RABBIT_PASSWORD": "mq-pass-73e9",
}
SECRETS = [CLOUDSTACK_API_KEY, CLOUDSTACK_SECRET_KEY, *PASSWORDS.values()]
CLOUDSTACK_ENV = {
    "CS2OS_CLOUDSTACK_ENDPOINT": CLOUDSTACK_ENDPOINT,
    "CS2OS_CLOUDSTACK_API_KEY": CLOUDSTACK_API_KEY,
    "CS2OS_CLOUDSTACK_SECRET_KEY": CLOUDSTACK_SECRET_KEY,
    "CS2OS_CLOUDSTACK_NETWORK_MAP": "guest-net:private,dmz:public",
    "CS2OS_CLOUDSTACK_PROJECT_MAP": "ROOT/webshop:webshop,*:migrated",
}

# A controller without nova-compute, and a compute-only subnode.
CONTROLLER = "key,mysql,rabbit,g-api,n-api,n-cond,n-sch,cs2os-api,cs2os-cond"
COMPUTE = "n-cpu,q-agt,cs2os-agent"


class Run:
    """One harness run (stack, unstack or clean) and what it left."""

    def __init__(self, root, command, proc):
        self.root = root
        self.command = command
        self.output = proc.stdout + proc.stderr
        log = root / "log"
        self.calls = [
            line.split(SEP)
            for line in (log / ("%s.calls" % command)).read_text().splitlines()
        ]
        self.trace = (log / ("%s.trace" % command)).read_text()
        self.services = (
            (log / ("%s.services" % command)).read_text().strip().split(","))

    def named(self, name):
        """The argument lists of every call to ``name``, in order."""
        return [call[1:] for call in self.calls if call[0] == name]

    def index(self, *call):
        return self.calls.index(list(call))


def run(root, command, services, **env):
    bash = shutil.which("bash")
    assert bash, "bash is needed to run the DevStack plugin"
    # Only what the test chooses: nothing from the caller's environment
    # reaches the plugin.
    full_env = {
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "HOME": str(root),
        "ENABLED_SERVICES": services,
        **PASSWORDS,
        **env,
    }
    proc = subprocess.run(
        [bash, str(HARNESS), str(root), command],
        env=full_env, capture_output=True, text=True, timeout=120,
        check=False)
    assert proc.returncode == 0, (
        "run-plugin.sh %s failed (%d):\n%s%s"
        % (command, proc.returncode, proc.stdout, proc.stderr))
    return Run(root, command, proc)


def conf_path(root):
    return root / "etc" / "cs2os" / "cs2os.conf"


def uwsgi_conf_path(root):
    return root / "etc" / "cs2os" / "cs2os-api-uwsgi.ini"


def read_conf(path):
    # [DEFAULT] as a section like the others, values as written.
    parser = configparser.RawConfigParser(default_section="no such section")
    parser.read_string(path.read_text(), source=str(path))
    return parser
