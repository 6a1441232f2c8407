"""cs2os-status upgrade check against the minicloud's Nova.

The agent check lists Nova's nova-compute services with cs2os's
[openstack] credentials (the minicloud's admin) and asks the cs2os-agent
of each host over the session's RabbitMQ: the module's agent runs on the
minicloud's compute host.  A host without an agent among others (a
warning) is in tests/functional/test_status.py.
"""

import json
import os
import subprocess
import sys

import pytest

import cs2os_agent
from tools.testbed import harness as ft
from tools.testbed.minicloud import admin_auth

RUN_ID = ft.RUN_ID
CHECK_AGENTS = "cs2os-agent on the compute hosts"


@pytest.fixture(scope="module")
def db_file(workdir, services):
    path = os.path.join(workdir, "e2e-status-%s.sqlite" % RUN_ID)
    config = _config(workdir, "db", path, services["exchange"], {})
    subprocess.run([sys.executable, "-m", "cs2os_agent.cmd.manage",
                    "--config-file", config, "db", "sync"],
                   check=True, capture_output=True, timeout=120)
    return path


def _config(workdir, name, db_file, exchange, openstack):
    path = os.path.join(workdir, "e2e-status-%s-%s.conf" % (name, RUN_ID))
    with open(path, "w") as f:
        f.write("[DEFAULT]\ntransport_url = %s\ncontrol_exchange = %s\n"
                "rpc_response_timeout = 10\n" % (ft.TRANSPORT_URL, exchange))
        f.write("\n[database]\nconnection = sqlite:///%s\n" % db_file)
        f.write("\n[openstack]\n")
        for key, value in openstack.items():
            f.write("%s = %s\n" % (key, value))
    return path


def _check(config):
    done = subprocess.run(
        [sys.executable, "-m", "cs2os_agent.cmd.status",
         "--config-file", config, "upgrade", "check", "--json"],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout, done.stderr[-3000:]
    checks = json.loads(done.stdout)["checks"]
    return done.returncode, {c["check"]: (c["result"], c["details"])
                             for c in checks}


def _compute_hosts(minicloud):
    return sorted({s.host for s in minicloud.conn.compute.services(
        binary="nova-compute")})


def test_an_agent_on_every_compute_host_passes(workdir, services, minicloud,
                                               agent, db_file):
    hosts = _compute_hosts(minicloud)
    assert hosts == [minicloud.compute_host], \
        "the minicloud has other compute hosts: %s" % hosts
    code, results = _check(_config(workdir, "ok", db_file,
                                   services["exchange"],
                                   admin_auth(minicloud)))
    assert results[CHECK_AGENTS] == (
        0, "a cs2os-agent answers on each of the 1 compute host(s) "
        "(version %s)" % cs2os_agent.__version__)
    # Schema at head, no policy file: every check passed.
    assert code == 0, results


def test_no_agent_on_the_compute_host_fails_naming_it(workdir, minicloud,
                                                      db_file):
    # The same cloud, a bus on which no agent listens.
    code, results = _check(_config(workdir, "none", db_file,
                                   "cs2os-nobody-%s" % RUN_ID,
                                   admin_auth(minicloud)))
    assert results[CHECK_AGENTS] == (
        2, "no cs2os-agent answers on the compute hosts (%s: "
        "MessagingTimeout)" % minicloud.compute_host)
    assert code == 2


def test_wrong_credentials_fail_without_the_password(workdir, services,
                                                     minicloud, db_file):
    auth = dict(admin_auth(minicloud), password="wrong-%s" % RUN_ID)
    code, results = _check(_config(workdir, "badauth", db_file,
                                   services["exchange"], auth))
    result, details = results[CHECK_AGENTS]
    assert result == 2
    assert details.startswith("cannot list Nova's compute services with "
                              "the [openstack] credentials (Unauthorized")
    assert "wrong-%s" % RUN_ID not in details
