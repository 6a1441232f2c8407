"""cs2os-status: what an operator checks before and after an upgrade.

``cs2os-status upgrade check`` (oslo.upgradecheck, like ``nova-status``)
reads the same configuration as the services and checks:

* the database schema is at the newest revision this release has (else:
  ``cs2os-manage db sync``);
* the policy file, if there is one, is YAML and every rule in it parses,
  references only rules that exist, and names a rule cs2os knows or one
  the file's own rules use;
* a cs2os-agent answers on every host that has a nova-compute service
  (the conductor copies disks through the agent of the server's host): a
  warning for each host without one, a failure when none answers.

It prints a table (``--json``: JSON) and exits 0 when all passed, 1 when
one warns, 2 when one fails, 255 when a check could not run at all.
"""

import concurrent.futures
import contextlib
import logging
import os
import sys

import sqlalchemy as sa
from alembic import script as alembic_script
from oslo_config import cfg
from oslo_upgradecheck import common_checks
from oslo_upgradecheck import upgradecheck

from cs2os_agent import conf
from cs2os_agent.agent import rpcapi as agent_rpcapi
from cs2os_agent.api import policy
from cs2os_agent.common import config
from cs2os_agent.common import context
from cs2os_agent.common import rpc
from cs2os_agent.conf import openstack as openstack_conf
from cs2os_agent.db import api as db_api
from cs2os_agent.db import migration
from cs2os_agent.openstack import client as openstack_client

CONF = conf.CONF
Code = upgradecheck.Code
Result = upgradecheck.Result

# Seconds each agent has to answer (they are all asked at once); less
# when [DEFAULT] rpc_response_timeout is shorter.
AGENT_TIMEOUT = 10
# Agents asked at the same time.
AGENT_PARALLEL = 16


def _safe(exc, secret=None, limit=400):
    """One line about ``exc`` without ``secret`` (a password) in it."""
    text = str(exc)
    if secret:
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return "%s: %s" % (type(exc).__name__, text) if text \
        else type(exc).__name__


class Checks(upgradecheck.UpgradeCommands):
    """``agent_api`` and ``compute_hosts`` (a function returning host
    names) are built from the configuration unless given;
    ``agent_timeout``: seconds each agent has (default: AGENT_TIMEOUT, or
    [DEFAULT] rpc_response_timeout when shorter)."""

    def __init__(self, config_opts=None, agent_api=None, compute_hosts=None,
                 agent_timeout=None):
        self.conf = config_opts or CONF
        self._agent_api = agent_api
        self._compute_hosts = compute_hosts
        self._agent_timeout = agent_timeout

    # -- the database schema ----------------------------------------------

    def _check_schema(self):
        url = self.conf.database.connection
        try:
            password = sa.engine.make_url(url).password
        except Exception:  # noqa: BLE001 - the database says it below
            password = None
        path = _sqlite_file(url)
        if path is not None and not os.path.exists(path):
            # Connecting would create an empty database file.
            return Result(Code.FAILURE, "the SQLite database %s does not "
                          "exist: run cs2os-manage db sync" % path)
        try:
            database = db_api.Database(url,
                                       self.conf.database.sqlite_busy_timeout)
            try:
                current = migration.current_version(database)
            finally:
                database.engine.dispose()
        except Exception as exc:  # noqa: BLE001 - report, do not crash
            return Result(Code.FAILURE, "cannot read the schema revision "
                          "of [database] connection (%s)"
                          % _safe(exc, password))
        scripts = alembic_script.ScriptDirectory.from_config(
            migration._config(None))
        head = scripts.get_current_head()
        if current == head:
            return Result(Code.SUCCESS, "the schema is at revision %s, the "
                          "newest of this release" % head)
        if current is None:
            return Result(Code.FAILURE, "the database has no cs2os schema "
                          "(this release needs revision %s): run "
                          "cs2os-manage db sync" % head)
        known = {s.revision for s in scripts.walk_revisions()}
        if current not in known:
            return Result(Code.FAILURE, "the schema is at revision %s, which "
                          "this release does not know (a newer release's?); "
                          "its newest is %s" % (current, head))
        return Result(Code.FAILURE, "the schema is at revision %s, this "
                      "release needs %s: run cs2os-manage db sync"
                      % (current, head))

    # -- the policy file --------------------------------------------------

    def _check_policy(self):
        enforcer = policy.init(self.conf)
        enforcer.suppress_deprecation_warnings = True
        configured = self.conf.get_location(
            "policy_file", "oslo_policy").location \
            != cfg.Locations.opt_default
        name = self.conf.oslo_policy.policy_file
        path = self.conf.find_file(name)
        if path is None:
            if configured:
                return Result(Code.FAILURE, "[oslo_policy] policy_file %s "
                              "does not exist" % name)
            return Result(Code.SUCCESS, "no policy file: the defaults apply")
        # oslo.policy logs each problem (a traceback per rule that does not
        # parse); the result names them instead.
        with _captured("oslo_policy") as logged:
            try:
                enforcer.load_rules(force_reload=True)
            except Exception as exc:  # noqa: BLE001 - a broken file
                return Result(Code.FAILURE, "%s cannot be read (%s)"
                              % (path, _safe(exc)))
            file_rules = dict(enforcer.file_rules)
            failures = ["%s: %r does not parse" % (n, r.check_str)
                        for n, r in sorted(file_rules.items())
                        if str(enforcer.rules[n]) == "!"
                        and r.check_str.strip() not in ("!", "")]
            del logged[:]
            if not enforcer.check_rules():
                # "Policies [...] reference a rule that is not defined."
                # and "... are part of a cyclical reference."
                failures += [m.rstrip(".") for m in logged]
        used = " ".join(r.check_str for r in (
            *file_rules.values(), *enforcer.registered_rules.values()))
        unknown = sorted(n for n in file_rules
                         if n not in enforcer.registered_rules
                         and "rule:%s" % n not in used)
        if unknown:
            failures.append("%s: no such cs2os policy, and no rule uses it "
                            "(misspelt?)" % ", ".join(unknown))
        if failures:
            return Result(Code.FAILURE, "%s: %s" % (path, "; ".join(failures)))
        return Result(Code.SUCCESS, "%s: %d rule(s), all valid"
                      % (path, len(file_rules)))

    def _check_policy_json(self):
        return common_checks.check_policy_json(self, self.conf)

    # -- the agents -------------------------------------------------------

    def _list_compute_hosts(self):
        if self._compute_hosts is not None:
            return self._compute_hosts()
        conn = openstack_client.connect(self.conf)
        try:
            return sorted({s.host for s in conn.compute.services(
                binary="nova-compute")})
        finally:
            conn.close()

    def _agents(self):
        if self._agent_api is None:
            rpc.init(self.conf)
            self._agent_api = agent_rpcapi.AgentAPI()
        return self._agent_api

    def _check_agents(self):
        try:
            hosts = self._list_compute_hosts()
        except Exception as exc:  # noqa: BLE001 - report, do not crash
            return Result(Code.FAILURE, "cannot list Nova's compute "
                          "services with the [openstack] credentials (%s)"
                          % _safe(exc, _openstack_password(self.conf)))
        if not hosts:
            return Result(Code.WARNING, "Nova has no nova-compute service: "
                          "no host to migrate to")
        answers = self._ask_agents(hosts)
        missing = {h: a for h, a in answers.items()
                   if isinstance(a, Exception)}
        if len(missing) == len(hosts):
            return Result(Code.FAILURE, "no cs2os-agent answers on the "
                          "compute hosts (%s)" % _hosts(missing))
        if missing:
            return Result(Code.WARNING, "%d of %d compute hosts have no "
                          "cs2os-agent that answers; migrations to them "
                          "fail: %s" % (len(missing), len(hosts),
                                        _hosts(missing)))
        versions = sorted({a.get("version", "?") for a in answers.values()})
        return Result(Code.SUCCESS, "a cs2os-agent answers on each of the "
                      "%d compute host(s) (version %s)"
                      % (len(hosts), ", ".join(versions)))

    def _ask_agents(self, hosts):
        agents = self._agents()
        admin = context.get_admin_context()
        timeout = self._agent_timeout
        if timeout is None:
            try:
                timeout = min(AGENT_TIMEOUT, self.conf.rpc_response_timeout)
            except cfg.NoSuchOptError:  # given an agent_api: no transport
                timeout = AGENT_TIMEOUT

        def ask(host):
            try:
                return agents.get_agent_info(admin, host, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - any failure: absent
                return exc

        with concurrent.futures.ThreadPoolExecutor(
                min(AGENT_PARALLEL, len(hosts))) as pool:
            return dict(zip(hosts, pool.map(ask, hosts), strict=True))

    _upgrade_checks = (
        ("Database schema", _check_schema),
        ("Policy file", _check_policy),
        ("Policy file JSON to YAML migration", _check_policy_json),
        ("cs2os-agent on the compute hosts", _check_agents),
    )


class _Kept(logging.Handler):
    def __init__(self, messages):
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _captured(logger_name):
    """The messages ``logger_name`` logs meanwhile, kept from the output."""
    logger = logging.getLogger(logger_name)
    messages = []
    handler = _Kept(messages)
    saved = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved[0]
        logger.setLevel(saved[1])


def _hosts(failures):
    return ", ".join("%s: %s" % (h, type(e).__name__)
                     for h, e in sorted(failures.items()))


def _openstack_password(config_opts):
    """[openstack] password, if its auth plugin has one and was loaded
    (keystoneauth registers a plugin's options as it loads it; not
    registered, it was not sent anywhere either)."""
    try:
        return config_opts[openstack_conf.GROUP].password
    except (cfg.NoSuchOptError, AttributeError):
        return None


def _sqlite_file(url):
    """The file of a SQLite URL, or None (another database, in memory)."""
    try:
        parsed = sa.engine.make_url(url)
    except Exception:  # noqa: BLE001 - not a URL: the check says so
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    if parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


def main(argv=None):
    defaults = [f for f in (config.DEFAULT_CONFIG_FILE,)
                if os.path.exists(f)]
    try:
        return upgradecheck.main(
            CONF, project="cs2os", upgrade_command=Checks(),
            argv=sys.argv[1:] if argv is None else argv,
            default_config_files=defaults)
    finally:
        rpc.cleanup()


if __name__ == "__main__":
    sys.exit(main())
