"""cs2os-status's checks in process: a real SQLite file, real policy
files, stand-ins for Nova's host list and the agents.  The command itself,
and the agents over RabbitMQ, are in tests/functional/test_status.py."""

import oslo_messaging as messaging
import pytest

from cs2os_agent.cmd import status
from cs2os_agent.db import api as db_api
from cs2os_agent.db import migration

Code = status.Code


def _db_config(make_config, path):
    return make_config("[database]\nconnection = sqlite:///%s\n" % path)


def test_schema_at_head(make_config, db, tmp_path):
    checks = status.Checks(_db_config(make_config,
                                      tmp_path / "cs2os.sqlite"))
    result = checks._check_schema()
    assert result.code == Code.SUCCESS
    assert migration.head_version() in result.details


def test_schema_behind_names_both_revisions(make_config, tmp_path):
    path = tmp_path / "old.sqlite"
    database = db_api.Database("sqlite:///%s" % path)
    migration.upgrade(database, "0001")
    database.engine.dispose()
    result = status.Checks(_db_config(make_config, path))._check_schema()
    assert (result.code, result.details) == (
        Code.FAILURE, "the schema is at revision 0001, this release needs "
        "%s: run cs2os-manage db sync" % migration.head_version())


def test_an_empty_database_and_an_unknown_revision(make_config, tmp_path):
    path = tmp_path / "empty.sqlite"
    database = db_api.Database("sqlite:///%s" % path)
    with database.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    result = status.Checks(_db_config(make_config, path))._check_schema()
    assert result.code == Code.FAILURE
    assert result.details.startswith("the database has no cs2os schema")
    with database.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version "
                             "(version_num VARCHAR(32) NOT NULL)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('9999')")
    database.engine.dispose()
    result = status.Checks(_db_config(make_config, path))._check_schema()
    assert result.code == Code.FAILURE
    assert "revision 9999, which this release does not know" \
        in result.details


def test_an_unreachable_database_hides_the_password(make_config):
    config = make_config(
        "[database]\nconnection = mysql+pymysql://cs2os:hunter2-pw@"
        "127.0.0.1:9/cs2os?connect_timeout=2\n")
    result = status.Checks(config)._check_schema()
    assert result.code == Code.FAILURE
    assert result.details.startswith("cannot read the schema revision")
    assert "hunter2-pw" not in result.details


def _policy_config(make_config, tmp_path, text):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return make_config("[oslo_policy]\npolicy_file = %s\n" % path), path


def test_no_policy_file_passes(make_config):
    result = status.Checks(make_config())._check_policy()
    assert (result.code, result.details) == (
        Code.SUCCESS, "no policy file: the defaults apply")


def test_a_policy_file_with_an_alias_passes(make_config, tmp_path):
    config, path = _policy_config(
        make_config, tmp_path, '"cs2os:migration:list": "rule:ops"\n'
                               '"ops": "role:admin"\n')
    result = status.Checks(config)._check_policy()
    assert (result.code, result.details) == (
        Code.SUCCESS, "%s: 2 rule(s), all valid" % path)


@pytest.mark.parametrize("text,problem", [
    ('"cs2os:migration:list": "role:admin or"\n',
     "cs2os:migration:list: 'role:admin or' does not parse"),
    ('"cs2os:migration:list": "rule:nope"\n',
     "Policies ['cs2os:migration:list'] reference a rule that is not "
     "defined"),
    ('"a": "rule:b"\n"b": "rule:a"\n"cs2os:migration:list": "rule:a"\n',
     "are part of a cyclical reference"),
    ('"cs2os:migrations:list": "role:admin"\n',
     "cs2os:migrations:list: no such cs2os policy, and no rule uses it"),
])
def test_a_bad_policy_file_fails_naming_the_problem(make_config, tmp_path,
                                                    text, problem):
    config, path = _policy_config(make_config, tmp_path, text)
    result = status.Checks(config)._check_policy()
    assert result.code == Code.FAILURE
    assert result.details.startswith("%s: " % path)
    assert problem in result.details


class FakeAgents:
    def __init__(self, answers):
        self.answers = answers
        self.asked = []

    def get_agent_info(self, context, host, timeout=None):
        self.asked.append((host, timeout))
        answer = self.answers[host]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _agent_check(make_config, answers, hosts=None):
    agents = FakeAgents(answers)
    hosts = sorted(answers) if hosts is None else hosts
    checks = status.Checks(make_config(), agent_api=agents,
                           compute_hosts=lambda: hosts)
    return checks._check_agents(), agents


def test_agents_everywhere(make_config):
    result, agents = _agent_check(make_config, {
        "c1": {"version": "0.1.0"}, "c2": {"version": "0.2.0"}})
    assert (result.code, result.details) == (
        Code.SUCCESS, "a cs2os-agent answers on each of the 2 compute "
        "host(s) (version 0.1.0, 0.2.0)")
    assert sorted(agents.asked) == [("c1", status.AGENT_TIMEOUT),
                                    ("c2", status.AGENT_TIMEOUT)]


def test_some_hosts_without_an_agent_warn(make_config):
    result, _ = _agent_check(make_config, {
        "c1": {"version": "0.1.0"}, "c2": messaging.MessagingTimeout(),
        "c3": messaging.MessagingTimeout()})
    assert (result.code, result.details) == (
        Code.WARNING, "2 of 3 compute hosts have no cs2os-agent that "
        "answers; migrations to them fail: c2: MessagingTimeout, c3: "
        "MessagingTimeout")


def test_no_agent_fails_and_no_host_warns(make_config):
    result, _ = _agent_check(make_config, {"c1": RuntimeError("x")})
    assert (result.code, result.details) == (
        Code.FAILURE, "no cs2os-agent answers on the compute hosts (c1: "
        "RuntimeError)")
    result, _ = _agent_check(make_config, {})
    assert result.code == Code.WARNING


def test_nova_unreachable_fails_naming_why(make_config):
    def hosts():
        raise RuntimeError("Connection refused at 127.0.0.1:9")

    checks = status.Checks(make_config(), agent_api=FakeAgents({}),
                           compute_hosts=hosts)
    result = checks._check_agents()
    assert result.code == Code.FAILURE
    assert result.details == (
        "cannot list Nova's compute services with the [openstack] "
        "credentials (RuntimeError: Connection refused at 127.0.0.1:9)")


def test_safe_leaves_out_the_secret_and_cuts_it_short():
    exc = RuntimeError("refused for u/s3cret-pw\n at 127.0.0.1:9 " + "x" * 500)
    text = status._safe(exc, "s3cret-pw")
    assert text.startswith("RuntimeError: refused for u/*** at 127.0.0.1:9 x")
    assert "s3cret" not in text and text.endswith("...")
    assert status._safe(RuntimeError()) == "RuntimeError"


def test_sqlite_file():
    assert status._sqlite_file("sqlite:////var/lib/x.sqlite") == \
        "/var/lib/x.sqlite"
    assert status._sqlite_file("sqlite://") is None
    assert status._sqlite_file("mysql+pymysql://u:p@db/cs2os") is None
