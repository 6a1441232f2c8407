"""cs2os-api under a real uwsgi, mounted at /cs2os, as DevStack runs it.

DevStack (devstack/lib/cs2os) writes a uwsgi ini with DevStack's
write_uwsgi_config, the module form ``cs2os_agent.wsgi.api:application``,
and Apache proxies ``/cs2os`` to it: the application gets SCRIPT_NAME
``/cs2os`` and the rest of the path as PATH_INFO.  Here uwsgi (the PyPI
build test-requirements.txt installs) loads the same module with the same
settings, and its own ``mount`` + ``manage-script-name`` split the path
the way Apache does.  Auth is noauth, as in tests/functional/test_api.py;
behind uwsgi sits the real conductor over RabbitMQ.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest
import requests

from tools.testbed import api_process
from tools.testbed import harness
from tools.testbed import process

RUN_ID = harness.RUN_ID
PREFIX = "/cs2os"
MODULE = "cs2os_agent.wsgi.api:application"   # devstack/settings CS2OS_UWSGI

# What DevStack's write_uwsgi_config writes for a module (lib/apache), less
# the Apache socket: an HTTP socket and the mount stand in for the proxy.
INI = """[uwsgi]
mount = %(prefix)s=%(module)s
manage-script-name = true
http-socket = 127.0.0.1:%(port)d
home = %(home)s
env = CS2OS_CONFIG_FILES=%(conf)s
processes = 2
master = true
die-on-term = true
enable-threads = true
thunder-lock = true
buffer-size = 65535
lazy-apps = true
need-app = true
logto = %(log)s
"""


def _uwsgi_binary():
    """The uwsgi of this Python's environment, else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "uwsgi")
    found = beside if os.access(beside, os.X_OK) else shutil.which("uwsgi")
    if not found:
        pytest.fail("uwsgi is missing: pip install -r test-requirements.txt "
                    "(it builds uwsgi; needs gcc and python3-dev)")
    return found


class UwsgiApi(process.Child):
    """uwsgi serving cs2os-api at PREFIX; stopped by its PID (die-on-term:
    the master ends its workers)."""

    stop_timeout = 20

    def __init__(self, workdir, conf_file):
        self.port = process.free_port()
        self.root = "http://127.0.0.1:%d" % self.port
        self.url = self.root + PREFIX
        self.ini = os.path.join(workdir, "cs2os-api-uwsgi-%s.ini" % RUN_ID)
        self.log_file = self.ini + ".log"
        with open(self.ini, "w") as f:
            f.write(INI % {"prefix": PREFIX, "module": MODULE,
                           "port": self.port, "home": sys.prefix,
                           "conf": conf_file, "log": self.log_file})

    def start(self, timeout=90):
        # As DevStack's run_process line: --procname-prefix, --ini.
        self.spawn([_uwsgi_binary(), "--procname-prefix", "cs2os-api",
                    "--ini", self.ini], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, (
                "uwsgi exited with %s:\n%s" % (self.proc.returncode,
                                               self.log()[-3000:]))
            try:
                requests.get(self.url + "/", timeout=2).raise_for_status()
                return
            except requests.RequestException as exc:
                assert time.monotonic() < deadline, (
                    "uwsgi did not answer in %ds: %s\n%s"
                    % (timeout, exc, self.log()[-3000:]))
                time.sleep(0.2)

    def log(self):
        if not os.path.exists(self.log_file):
            return ""
        with open(self.log_file, errors="replace") as f:
            return f.read()


@pytest.fixture(scope="module")
def api(workdir, services, conductor):
    # The config file a cs2os-api process would read; uwsgi reads it
    # through $CS2OS_CONFIG_FILES.
    reports = os.path.join(workdir, "gmr-%s" % RUN_ID)
    os.makedirs(reports)
    trigger = os.path.join(reports, "trigger")
    open(trigger, "w").close()  # watched from the start: it must exist
    conf = api_process.ApiProcess(
        workdir, "cs2os-uwsgi-api-%s" % RUN_ID, harness.TRANSPORT_URL,
        services["exchange"],
        sections={"healthcheck": {
            "backends": "disable_by_file",
            "disable_by_file_path": os.path.join(workdir, "no-such-file")},
            "oslo_reports": {"log_dir": reports,
                             "file_event_handler": trigger,
                             "file_event_handler_interval": "1"}})
    server = UwsgiApi(workdir, conf.conf_file)
    server.reports, server.trigger = reports, trigger
    server.start()
    yield server
    server.stop()
    assert server.proc.returncode is not None


def test_it_is_uwsgi_serving(api):
    with open("/proc/%d/cmdline" % api.proc.pid, "rb") as f:
        argv = f.read().split(b"\0")
    assert os.path.basename(argv[0].decode()).startswith(
        ("uwsgi", "cs2os-api")), argv
    log = api.log()
    # uwsgi's own account of the mount: the app is at the prefix.
    assert "mounting %s on %s" % (MODULE, PREFIX) in log, log[-3000:]


def test_version_document_links_carry_the_prefix(api):
    resp = requests.get(api.url + "/", timeout=10)
    assert resp.status_code == 200, resp.text
    version = resp.json()["versions"][0]
    assert version["id"] == "v1"
    assert version["links"][0]["href"] == api.root + "/cs2os/v1/"
    # /v1 beneath the prefix is routed too, and says the same.
    v1 = requests.get(api.url + "/v1", timeout=10)
    assert v1.status_code == 200, v1.text
    assert v1.json()["version"]["links"][0]["href"] == (
        api.root + "/cs2os/v1/")


def test_migrations_through_uwsgi_reach_the_conductor(api, cloud):
    listed = requests.get(api.url + "/v1/migrations", timeout=30)
    assert listed.status_code == 200, listed.text
    assert isinstance(listed.json()["migrations"], list)

    name = "uwsgi-missing-%s" % RUN_ID
    resp = requests.post(api.url + "/v1/migrations",
                         json={"migration": {"source": name}}, timeout=30)
    assert resp.status_code == 202, resp.text
    created = resp.json()["migration"]
    location = resp.headers["Location"]
    assert location == api.root + "/cs2os/v1/migrations/" + created["id"]

    record = {}

    def failed():
        record.update(requests.get(location, timeout=30).json()["migration"])
        return record["state"] == "failed"

    harness.wait_for(failed, 60, "the migration to fail", interval=0.3)
    assert "CloudStack has no VM with id or name %s" % name in \
        record["error"]
    assert any(c[1] == "listVirtualMachines" for c in cloud.calls)
    # The record is in the list, whose paging links carry the prefix.
    for _ in range(2):
        requests.post(api.url + "/v1/migrations",
                      json={"migration": {"source": name}}, timeout=30)
    page = requests.get(api.url + "/v1/migrations?limit=1&source=" + name,
                        timeout=30).json()
    assert page["migrations_links"][0]["href"].startswith(
        api.root + "/cs2os/v1/migrations?")


def test_healthcheck_and_openapi_beneath_the_prefix(api):
    health = requests.get(api.url + "/healthcheck", timeout=10)
    assert (health.status_code, health.text) == (200, "OK")
    doc = requests.get(api.url + "/v1/openapi.json", timeout=10)
    assert doc.status_code == 200, doc.text
    assert "/v1/migrations" in doc.json()["paths"]


def test_a_guru_meditation_report_of_a_uwsgi_worker(api):
    # uwsgi's master owns the signals: the watched file reaches the
    # workers.  Touched a second after they armed it (mtime granularity).
    time.sleep(1.5)
    os.utime(api.trigger)
    found = []

    def written():
        found[:] = [n for n in os.listdir(api.reports)
                    if n.startswith("cs2os-api_gurumeditation_")]
        return found

    harness.wait_for(written, 30, "a Guru Meditation Report", interval=0.3)
    with open(os.path.join(api.reports, found[0]), errors="replace") as f:
        report = f.read()
    assert "Guru Meditation" in report
    assert "cs2os (CloudStack KVM to OpenStack migrations)" in report
    # It still serves.
    assert requests.get(api.url + "/", timeout=10).status_code == 200
