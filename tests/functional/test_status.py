"""cs2os-status upgrade check: the real command on real databases and
policy files, and its agent check against real agents over RabbitMQ.

Nova's list of compute hosts comes from the minicloud in
tests/e2e/test_status.py; here the agent check is given the host names
and asks real cs2os-agent processes.
"""

import json
import os
import subprocess
import sys

import pytest
from alembic import script as alembic_script

from cs2os_agent import conf
from cs2os_agent.cmd import status
from cs2os_agent.db import migration
from tools.testbed import harness

RUN_ID = harness.RUN_ID
CHECK_SCHEMA = "Database schema"
CHECK_POLICY = "Policy file"
CHECK_AGENTS = "cs2os-agent on the compute hosts"


def _previous(revision):
    scripts = alembic_script.ScriptDirectory.from_config(
        migration._config(None))
    return scripts.get_revision(revision).down_revision


def _config(workdir, name, db_file, **sections):
    path = os.path.join(workdir, "status-%s-%s.conf" % (name, RUN_ID))
    with open(path, "w") as f:
        f.write("[DEFAULT]\ntransport_url = %s\nrpc_response_timeout = 3\n"
                % harness.TRANSPORT_URL)
        f.write("\n[database]\nconnection = sqlite:///%s\n" % db_file)
        # Nothing listens there: the agent check fails fast, and says why.
        f.write("\n[openstack]\nauth_type = password\n"
                "auth_url = http://127.0.0.1:9/v3\nusername = cs2os\n"
                "password = status-%s-pw\nproject_name = service\n"
                "user_domain_name = Default\n"
                "project_domain_name = Default\n" % RUN_ID)
        for section, options in sections.items():
            f.write("\n[%s]\n" % section)
            for key, value in options.items():
                f.write("%s = %s\n" % (key, value))
    return path


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "cs2os_agent.cmd.status", *args],
        capture_output=True, text=True, timeout=120, check=False)


def _manage(config, *args):
    subprocess.run([sys.executable, "-m", "cs2os_agent.cmd.manage",
                    "--config-file", config, *args],
                   check=True, capture_output=True, text=True, timeout=120)


def _check(config):
    """(exit code, {check name: (code, details)}) of a --json run."""
    done = _run("--config-file", config, "upgrade", "check", "--json")
    assert done.stdout, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert results["name"] == "Upgrade Check Results"
    return done.returncode, {c["check"]: (c["result"], c["details"])
                             for c in results["checks"]}


@pytest.fixture(scope="module")
def head_db(workdir):
    path = os.path.join(workdir, "status-head-%s.sqlite" % RUN_ID)
    _manage(_config(workdir, "head", path), "db", "sync")
    return path


def test_a_database_at_head_passes(workdir, head_db):
    code, results = _check(_config(workdir, "head", head_db))
    head = migration.head_version()
    assert results[CHECK_SCHEMA] == (
        0, "the schema is at revision %s, the newest of this release" % head)
    assert results[CHECK_POLICY] == (0, "no policy file: the defaults apply")
    # No Nova here: the agent check fails, names why, and the password
    # stays out of it.
    agents_code, details = results[CHECK_AGENTS]
    assert agents_code == 2
    assert details.startswith("cannot list Nova's compute services")
    assert "127.0.0.1:9" in details
    assert "status-%s-pw" % RUN_ID not in details
    assert code == 2


def test_a_database_one_revision_behind_fails_naming_it(workdir):
    head = migration.head_version()
    behind = _previous(head)
    assert behind is not None
    path = os.path.join(workdir, "status-behind-%s.sqlite" % RUN_ID)
    config = _config(workdir, "behind", path)
    _manage(config, "db", "sync", behind)
    code, results = _check(config)
    assert results[CHECK_SCHEMA] == (
        2, "the schema is at revision %s, this release needs %s: run "
        "cs2os-manage db sync" % (behind, head))
    assert code == 2
    # cs2os-manage db sync brings it to head, and the check passes.
    _manage(config, "db", "sync")
    assert _check(config)[1][CHECK_SCHEMA][0] == 0


def test_a_missing_database_file_is_not_created(workdir):
    path = os.path.join(workdir, "status-none-%s.sqlite" % RUN_ID)
    code, results = _check(_config(workdir, "none", path))
    assert results[CHECK_SCHEMA] == (
        2, "the SQLite database %s does not exist: run cs2os-manage db "
        "sync" % path)
    assert not os.path.exists(path)


def _policy(workdir, name, text):
    path = os.path.join(workdir, "status-policy-%s-%s" % (RUN_ID, name))
    with open(path, "w") as f:
        f.write(text)
    return path


def test_a_valid_policy_file_passes(workdir, head_db):
    path = _policy(workdir, "good.yaml",
                   '"cs2os:migration:list": "rule:readers"\n'
                   '"readers": "role:reader or role:admin"\n')
    code, results = _check(_config(
        workdir, "policy-good", head_db,
        oslo_policy={"policy_file": path}))
    assert results[CHECK_POLICY] == (0, "%s: 2 rule(s), all valid" % path)


def test_a_policy_file_with_a_bad_rule_fails_naming_it(workdir, head_db):
    path = _policy(workdir, "bad.yaml",
                   '"cs2os:migration:list": "role:admin or"\n'
                   '"cs2os:migration:get": "rule:no_such_rule"\n'
                   '"cs2os:migraton:cancel": "role:admin"\n')
    code, results = _check(_config(
        workdir, "policy-bad", head_db, oslo_policy={"policy_file": path}))
    result, details = results[CHECK_POLICY]
    assert result == 2
    assert details.startswith(path + ": ")
    assert "cs2os:migration:list: 'role:admin or' does not parse" in details
    assert "['cs2os:migration:get'] reference a rule that is not " \
        "defined" in details
    assert "cs2os:migraton:cancel: no such cs2os policy" in details
    assert code == 2
    # oslo.policy's own tracebacks stay out of the output.
    done = _run("--config-file", _config(
        workdir, "policy-bad", head_db, oslo_policy={"policy_file": path}),
        "upgrade", "check")
    assert "Traceback" not in done.stdout + done.stderr
    assert "Failed to understand rule" not in done.stderr


def test_a_policy_file_that_is_not_yaml_or_is_missing_fails(workdir,
                                                            head_db):
    path = _policy(workdir, "broken.yaml", '"cs2os:migration:list": [\n')
    _, results = _check(_config(workdir, "policy-broken", head_db,
                                oslo_policy={"policy_file": path}))
    result, details = results[CHECK_POLICY]
    assert result == 2 and details.startswith("%s cannot be read" % path)
    missing = os.path.join(workdir, "no-such-policy-%s.yaml" % RUN_ID)
    _, results = _check(_config(workdir, "policy-missing", head_db,
                                oslo_policy={"policy_file": missing}))
    assert results[CHECK_POLICY] == (
        2, "[oslo_policy] policy_file %s does not exist" % missing)


def test_a_json_policy_file_fails_the_common_check(workdir, head_db):
    path = _policy(workdir, "old.json",
                   '{"cs2os:migration:list": "role:admin"}\n')
    _, results = _check(_config(workdir, "policy-json", head_db,
                                oslo_policy={"policy_file": path}))
    result, details = results["Policy file JSON to YAML migration"]
    assert result == 2 and "oslopolicy-convert-json-to-yaml" in details


# -- the agent check against real agents (in this process) ----------------


def _agent_check(agent_api, hosts):
    # 10 s, not the session's rpc_response_timeout (3 s): an agent on a
    # busy machine must not look absent.
    checks = status.Checks(conf.CONF, agent_api=agent_api,
                           compute_hosts=lambda: hosts, agent_timeout=10)
    return checks._check_agents()


@pytest.fixture(scope="module")
def two_agents(agents):
    return agents.start("status-1"), agents.start("status-2")


def test_every_host_with_an_agent_passes(two_agents, agent_api):
    one, two = two_agents
    result = _agent_check(agent_api, [one.host, two.host])
    assert result.code == status.Code.SUCCESS
    assert result.details == ("a cs2os-agent answers on each of the 2 "
                              "compute host(s) (version %s)"
                              % one.info["version"])


def test_a_host_without_an_agent_is_a_warning(two_agents, agent_api):
    one = two_agents[0]
    ghost = "cs2os-test-%s-no-agent" % RUN_ID
    result = _agent_check(agent_api, [one.host, ghost])
    assert result.code == status.Code.WARNING
    assert result.details == (
        "1 of 2 compute hosts have no cs2os-agent that answers; migrations "
        "to them fail: %s: MessagingTimeout" % ghost)


def test_no_agent_anywhere_is_a_failure(services, agent_api):
    ghosts = ["cs2os-test-%s-ghost-%d" % (RUN_ID, i) for i in range(3)]
    result = _agent_check(agent_api, ghosts)
    assert result.code == status.Code.FAILURE
    assert result.details == (
        "no cs2os-agent answers on the compute hosts (%s)"
        % ", ".join("%s: MessagingTimeout" % g for g in sorted(ghosts)))


def test_no_compute_host_is_a_warning(services, agent_api):
    result = _agent_check(agent_api, [])
    assert result.code == status.Code.WARNING
    assert "no nova-compute service" in result.details
