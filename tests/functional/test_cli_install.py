"""`pip install cs2os` with no extra gives a working `openstack cs2os`.

A fresh virtualenv gets cs2os (a copy of this tree: building writes into
it) and python-openstackclient, nothing else.  None of the services'
requirements may come with them (libvirt-python would need the libvirt
headers and a compiler), and the `openstack` command of that venv lists
migrations of a real cs2os-api (noauth, in front of a real conductor).
pip reads its own cache, so a second run mostly skips the downloads.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import requests

from tools.testbed import api_process
from tools.testbed import conductor_process
from tools.testbed import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# What building the distribution reads (setup.cfg's file: directives).
PACKAGING = ["setup.cfg", "pyproject.toml", "README.md", "LICENSE"]
# Server-side: none of these may be importable after a CLI-only install.
SERVER_ONLY = ["libvirt", "sqlalchemy", "alembic", "oslo_messaging",
               "keystonemiddleware", "oslo_policy", "oslo_middleware",
               "qemu.qmp", "cs", "cotyledon", "oslo_service"]


def _run(argv, timeout, **kwargs):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OS_", "PYTHON", "VIRTUAL_ENV",
                                "PIP_CONSTRAINT"))}
    try:
        return subprocess.run(argv, capture_output=True, text=True,
                              timeout=timeout, env=env, **kwargs)
    except subprocess.TimeoutExpired as exc:
        pytest.fail("%s: no end after %ds\n%s" % (argv[:4], timeout,
                                                  exc.stdout or ""))


def _check(proc, what):
    assert proc.returncode == 0, "%s failed (%d):\n%s\n%s" % (
        what, proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.stdout


@pytest.fixture(scope="module")
def cli_venv(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli-install")
    src = base / "src"
    src.mkdir()
    names = PACKAGING + sorted(f for f in os.listdir(ROOT)
                               if f.startswith("requirements")
                               and f.endswith(".txt"))
    for name in names:
        shutil.copy2(os.path.join(ROOT, name), src / name)
    shutil.copytree(os.path.join(ROOT, "cs2os_agent"), src / "cs2os_agent",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = base / "venv"
    started = time.monotonic()
    # The base interpreter, not this test's virtualenv.
    python = getattr(sys, "_base_executable", None) or sys.executable
    _check(_run([python, "-m", "venv", str(venv)], 120), "python -m venv")
    _check(_run([str(venv / "bin" / "pip"), "install", "-q",
                 "--disable-pip-version-check", "--no-compile", str(src),
                 "python-openstackclient"], 600),
           "pip install <cs2os, no extra> python-openstackclient")
    print("CLI-only install: %.1fs" % (time.monotonic() - started))
    return venv


def test_the_cli_install_brings_no_server_requirement(cli_venv):
    python = str(cli_venv / "bin" / "python")
    probe = ("import importlib.util, json, sys; print(json.dumps("
             "[m for m in sys.argv[1:] if importlib.util.find_spec("
             "m.split('.')[0]) and importlib.util.find_spec(m)]))")
    found = json.loads(_check(_run([python, "-c", probe, *SERVER_ONLY], 60),
                              "import probe"))
    assert found == [], "a CLI-only install brought server-side modules"
    _check(_run([python, "-m", "pip", "check"], 120), "pip check")
    # The CLI's own modules import there (the plugin loads them lazily).
    _check(_run([python, "-c", "import cs2os_agent.osc.plugin, "
                 "cs2os_agent.osc.client, cs2os_agent.osc.v1.migration"],
                60), "import cs2os_agent.osc")


@pytest.fixture(scope="module")
def api(workdir, services, cloud):
    conductor = conductor_process.ConductorProcess(
        workdir, "cs2os-cli-install-%s-conductor" % harness.RUN_ID,
        harness.TRANSPORT_URL, services["exchange"],
        "sqlite:///%s" % os.path.join(workdir, "cli-install.sqlite"),
        "notifications-cli-install-%s" % harness.RUN_ID,
        sections={"cloudstack": {"endpoint": cloud.endpoint,
                                 "api_key": cloud.admin.apikey,
                                 "secret_key": cloud.admin.secretkey}})
    conductor.manage("db", "sync")
    proc = api_process.ApiProcess(
        workdir, "cs2os-cli-install-%s-api" % harness.RUN_ID,
        harness.TRANSPORT_URL, services["exchange"])
    try:
        conductor.start()
        proc.start()
        yield proc
    finally:
        proc.stop()
        conductor.stop()


def test_openstack_cs2os_of_a_cli_only_install_lists_migrations(
        cli_venv, api):
    source = "cli-install-%s" % harness.RUN_ID
    resp = requests.post(api.url + "/v1/migrations",
                         json={"migration": {"source": source}}, timeout=30)
    assert resp.status_code == 202, resp.text
    created = resp.json()["migration"]["id"]
    openstack = str(cli_venv / "bin" / "openstack")
    listed = json.loads(_check(_run(
        [openstack, "--os-auth-type", "none", "--os-endpoint", api.url,
         "cs2os", "migration", "list", "--source", source, "-f", "json"],
        120), "openstack cs2os migration list"))
    assert [row["ID"] for row in listed] == [created]
