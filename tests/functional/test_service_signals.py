"""What the services do on SIGUSR2 and SIGHUP, as real processes.

SIGUSR2: a Guru Meditation Report (oslo.reports) on the service's stderr,
and the service goes on.  SIGHUP: the configuration files are read again
and the mutable options applied (``debug`` among them) instead of the
process ending, which is what SIGHUP did before.
"""

import os
import re
import signal
import uuid

import pytest
import requests

from cs2os_agent.common import context as cs2os_context
from cs2os_agent.conductor import rpcapi as conductor_rpcapi
from tools.testbed import api_process
from tools.testbed import conductor_process
from tools.testbed import harness

RUN_ID = harness.RUN_ID
RELOADED = "Configuration reloaded"


@pytest.fixture(scope="module")
def conductor_api(services):
    return conductor_rpcapi.ConductorAPI()


def _set_debug(proc, value):
    with open(proc.conf_file) as f:
        text = f.read()
    old = "debug = %s\n" % (not value)
    assert old in text, text
    with open(proc.conf_file, "w") as f:
        f.write(text.replace(old, "debug = %s\n" % value))


@pytest.fixture(scope="module")
def conductor(workdir, services, cloud, conductor_api):
    """A conductor that starts with debug = False."""
    proc = conductor_process.ConductorProcess(
        workdir, "cs2os-signals-%s-conductor" % RUN_ID,
        harness.TRANSPORT_URL, services["exchange"],
        "sqlite:///%s" % os.path.join(workdir, "signals-%s.sqlite" % RUN_ID),
        "notifications-signals-%s" % RUN_ID,
        sections={"cloudstack": {"endpoint": cloud.endpoint,
                                 "api_key": cloud.admin.apikey,
                                 "secret_key": cloud.admin.secretkey}})
    _set_debug(proc, False)
    proc.manage("db", "sync")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def api(workdir, services):
    proc = api_process.ApiProcess(
        workdir, "cs2os-api-signals-%s" % RUN_ID, harness.TRANSPORT_URL,
        services["exchange"])
    proc.start()
    yield proc
    proc.stop()


def _read(path, offset=0):
    with open(path, errors="replace") as f:
        f.seek(offset)
        return f.read()


def _size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def _wait_text(path, text, offset=0, timeout=30):
    harness.wait_for(lambda: text in _read(path, offset), timeout,
                     "%r in %s" % (text, path))
    return _read(path, offset)


def _migrate_missing_vm(conductor_api, ctxt):
    """A migration of a VM the stand-in does not have: the conductor asks
    CloudStack (the client logs each call at DEBUG) and fails it."""
    created = conductor_api.create_migration(
        ctxt, {"source": "nothing-%s-%s" % (RUN_ID, uuid.uuid4().hex[:6])})
    return harness.wait_state(conductor_api, ctxt, created["id"],
                              ("failed",), timeout=60)


def test_sighup_turns_debug_logging_on_and_off_in_place(conductor,
                                                        conductor_api, ctxt):
    pid = conductor.proc.pid
    failed = _migrate_missing_vm(conductor_api, ctxt)
    assert "CloudStack has no VM" in failed["error"]
    assert " DEBUG " not in conductor.log()

    _set_debug(conductor, True)
    offset = _size(conductor.log_file)
    os.kill(pid, signal.SIGHUP)
    after = _wait_text(conductor.log_file, RELOADED, offset)
    assert "Option DEFAULT.debug changed from [False] to [True]" in after
    _migrate_missing_vm(conductor_api, ctxt)
    after = _read(conductor.log_file, offset)
    assert "DEBUG cs2os_agent.cloudstack.client [" in after, after[-3000:]
    assert conductor.proc.poll() is None and conductor.proc.pid == pid

    _set_debug(conductor, False)
    offset = _size(conductor.log_file)
    os.kill(pid, signal.SIGHUP)
    _wait_text(conductor.log_file, RELOADED, offset)
    offset = _size(conductor.log_file)
    _migrate_missing_vm(conductor_api, ctxt)
    assert " DEBUG " not in _read(conductor.log_file, offset)
    assert conductor.proc.poll() is None


def test_a_broken_config_file_on_sighup_keeps_the_running_one(
        conductor, conductor_api, ctxt):
    with open(conductor.conf_file) as f:
        good = f.read()
    offset = _size(conductor.log_file)
    try:
        with open(conductor.conf_file, "w") as f:
            f.write(good + "\n[broken\n")
        os.kill(conductor.proc.pid, signal.SIGHUP)
        after = _wait_text(conductor.log_file, "Reloading the configuration "
                           "failed, the running one stays", offset)
        assert "ERROR" in after
    finally:
        with open(conductor.conf_file, "w") as f:
            f.write(good)
    assert conductor.proc.poll() is None
    assert isinstance(conductor_api.list_migrations(ctxt, limit=1), list)


def _report(proc):
    """SIGUSR2 to ``proc``; the Guru Meditation Report it wrote."""
    stderr = proc.log_file + ".stderr"
    offset = _size(stderr)
    os.kill(proc.proc.pid, signal.SIGUSR2)
    # Its last section is the configuration; then the file stops growing.
    _wait_text(stderr, "====%s====" % "Configuration".center(64), offset)
    sizes = [-1]

    def settled():
        sizes.append(_size(stderr))
        return sizes[-1] == sizes[-2]

    harness.wait_for(settled, 30, "the report's end", interval=0.5)
    return _read(stderr, offset)


def _check_report(report, proc):
    assert "Guru Meditation" in report
    for section in ("Package", "Threads", "Processes", "Configuration"):
        assert "====%s====" % section.center(64) in report, section
    assert "product = cs2os" in report
    # Its own process in the process list, its options in the
    # configuration (its host name in [DEFAULT]).
    assert "Process %d " % proc.proc.pid in report
    assert "\n  host = %s\n" % proc.name in report
    # The transport URL has a password: secret options show as ***.
    assert harness.TRANSPORT_URL not in report
    assert "\n  transport_url = ***\n" in report


def test_sigusr2_reports_the_agent_and_it_goes_on(agents, agent_api):
    agent = agents.start("gmr")
    _check_report(_report(agent), agent)
    assert agent.proc.poll() is None
    info = agent_api.get_agent_info(cs2os_context.get_admin_context(),
                                    agent.host, timeout=10)
    assert info["host"] == agent.host


def test_sigusr2_reports_the_conductor_and_it_goes_on(conductor, cloud,
                                                      conductor_api, ctxt):
    report = _report(conductor)
    _check_report(report, conductor)
    assert cloud.admin.secretkey not in report
    assert "\n  secret_key = ***\n" in report
    # The engine's threads are in it.
    assert "cs2os_agent/conductor/" in report
    assert conductor.proc.poll() is None
    assert isinstance(conductor_api.list_migrations(ctxt, limit=1), list)


def test_sigusr2_and_sighup_leave_the_api_serving(api):
    _check_report(_report(api), api)
    offset = _size(api.log_file)
    os.kill(api.proc.pid, signal.SIGHUP)
    _wait_text(api.log_file, RELOADED, offset)
    assert api.proc.poll() is None
    assert requests.get(api.url + "/v1/migrations?limit=1",
                        timeout=30).status_code in (200, 503)


def test_sighup_leaves_the_agent_running(agents, agent_api):
    agent = agents.start("hup")
    offset = _size(agent.log_file)
    os.kill(agent.proc.pid, signal.SIGHUP)
    _wait_text(agent.log_file, RELOADED, offset)
    assert agent.proc.poll() is None
    assert agent_api.get_agent_info(cs2os_context.get_admin_context(),
                                    agent.host, timeout=10)


def test_the_api_logs_its_options_at_start_secrets_masked(api):
    # debug = True (the harness's config): every option once at start,
    # where it came from, and the broker's credentials never.
    log = _read(api.log_file)
    assert "Configuration options gathered from:" in log
    assert "config files: ['%s']" % api.conf_file in log
    assert re.search(r" transport_url +?= \*\*\*\*", log), log[-3000:]
    assert harness.TRANSPORT_URL not in log
