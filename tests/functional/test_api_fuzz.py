"""Fuzzing cs2os-api from its own OpenAPI document (schemathesis).

A real cs2os-api process (HTTP on 127.0.0.1, noauth) in front of a real
cs2os-conductor, both on a RabbitMQ vhost and a SQLite database of their
own: the migrations the fuzzer creates land nowhere another test looks,
and fail validation against a CloudStack stand-in that has no VMs.
Schemathesis generates valid and invalid requests from the document
(cs2os_agent/api/openapi.py, the schemas the API validates with) and runs
all its default checks on every answer (but ignored_auth: this API runs
noauth); a fixed seed and derandomized Hypothesis make every run send the
same requests.

The last test reads the API's access log: every request the fuzzer (and
its checks) sent was answered, none with a 5xx.
"""

import os
import re
import urllib.parse

import jsonschema
import pytest
import requests

from cs2os_agent.api import openapi
from cs2os_agent.api import schemas
from cs2os_agent.common import exception
from cs2os_agent.conductor import maps
from cs2os_agent.conductor import request as request_schema
from tests.functional import checks
from tools.testbed import api_process
from tools.testbed import cloudstack_api
from tools.testbed import conductor_process
from tools.testbed import harness

try:
    import schemathesis
    from hypothesis import HealthCheck
    from hypothesis import settings
except ImportError:  # the module must fail, not skip
    schemathesis = None

RUN_ID = harness.RUN_ID
VHOST = "cs2os-test-%s-fuzz" % RUN_ID
EXAMPLES = 50  # per operation and phase; the module runs in ~40 s
SEED = 20261126
# Statuses a schema-valid request may get besides the defaults, where the
# answer depends on state the document cannot describe.
STATE_STATUSES = {
    # A marker must name an existing migration: 400 cs2os.InvalidMarker.
    "listMigrations": "400",
    # An Idempotency-Key the fuzzer reuses with another body:
    # 422 cs2os.IdempotencyKeyReused.
    "createMigration": "422",
}
# schemathesis's default, less 5xx (never fine here) and 429 (no limits).
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409"]
ACCESS_LINE = re.compile(r'"[A-Z]+ [^"]*" (\d{3}) \S+$')
# The document describes the newest API (fields of later microversions
# are marked x-cs2os-min-version): its requests speak that version.
LATEST = {"OpenStack-API-Version": "cs2os latest"}


@pytest.fixture(scope="module")
def bus():
    """A vhost of its own: queue names are global in a vhost, so another
    conductor on the session's would take this API's calls."""
    checks.require_broker()
    checks.rabbitmqctl("add_vhost", VHOST)
    user = urllib.parse.urlsplit(harness.BROKER_URL).username or "guest"
    checks.rabbitmqctl("set_permissions", "-p", VHOST, user,
                       ".*", ".*", ".*")
    yield harness.BROKER_URL.rstrip("/") + "/" + VHOST
    checks.rabbitmqctl("delete_vhost", VHOST)


@pytest.fixture(scope="module")
def api(workdir, bus):
    cloud = cloudstack_api.FakeCloudStack()
    cloud.admin = cloud.add_account("admin")
    endpoint = cloud.serve()
    exchange = "cs2os-fuzz-%s" % RUN_ID
    conductor = conductor_process.ConductorProcess(
        workdir, "cs2os-fuzz-%s-conductor" % RUN_ID, bus, exchange,
        "sqlite:///%s" % os.path.join(workdir, "fuzz-%s.sqlite" % RUN_ID),
        "notifications-fuzz-%s" % RUN_ID,
        sections={"cloudstack": {"endpoint": endpoint,
                                 "api_key": cloud.admin.apikey,
                                 "secret_key": cloud.admin.secretkey}})
    conductor.manage("db", "sync")
    proc = api_process.ApiProcess(
        workdir, "cs2os-fuzz-%s-api" % RUN_ID, bus, exchange)
    try:
        conductor.launch()
        proc.start()
        # Up when a list crosses the bus to the conductor and back.
        conductor.wait_ready(lambda: requests.get(
            proc.url + "/v1/migrations?limit=1",
            timeout=30).raise_for_status(), timeout=90)
        # The probes above may have met a 503 (no conductor yet): the
        # log is read from here on.
        proc.fuzz_log_offset = os.path.getsize(proc.log_file)
        yield proc
    finally:
        proc.stop()
        conductor.stop()
        cloud.shutdown()


def _network_key_is_valid():
    # OpenAPI 3.0 has no propertyNames: the document carries the rule on
    # "networks" keys as x-propertyNames, which schemathesis does not
    # read, so it would call a body with a blank key valid.
    key = schemas.CREATE_MIGRATION["properties"]["migration"][
        "properties"]["networks"]["propertyNames"]
    return jsonschema.Draft202012Validator(key).is_valid


def _valid_name(name):
    # The conductor wants a project, volume type or aggregate printable
    # (str.isprintable()), which JSON Schema cannot say: the document says
    # it in words, and a body the fuzzer would call valid is a 400 naming
    # the field.
    if not isinstance(name, str):
        return True
    try:
        request_schema.clean_name(name, "a name")
    except exception.Invalid:
        return False
    return True


def _valid_map(value, field):
    # A request's project/flavor/volume type map: its keys follow
    # propertyNames (x-propertyNames in the document, which schemathesis
    # does not read) and both keys and values must be printable, as for
    # names above: the conductor's own check decides.
    if not isinstance(value, dict):
        return True
    try:
        maps.clean(value, field)
    except exception.Invalid:
        return False
    return True


def test_the_served_document_is_the_one_fuzzed(api):
    resp = requests.get(api.url + openapi.PATH, timeout=30)
    assert resp.status_code == 200
    assert resp.json() == openapi.document(api.url)


if schemathesis is None:
    def test_schemathesis_is_installed():
        pytest.fail("schemathesis is not installed: pip install -r "
                    "test-requirements.txt", pytrace=False)
else:
    SCHEMA = schemathesis.openapi.from_dict(
        openapi.document(), config=schemathesis.Config.from_dict({
            "seed": SEED,
            "generation": {"deterministic": True,
                           # noauth: X-Auth-Token means nothing here
                           # (tests/unit/api/test_app.py covers keystone).
                           "with-security-parameters": False},
            # It expects a 401 without a token, which noauth never says.
            "checks": {"ignored_auth": {"enabled": False}},
            "operations": [
                {"include-operation-id": op, "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ACCEPTED + [status]}}}
                for op, status in STATE_STATUSES.items()] + [
                # The coverage phase builds its bodies without the hooks
                # below, and a start_at or a cutover window is valid only
                # relative to the clock: these two get the other phases.
                {"include-operation-id": op,
                 "phases": {"coverage": {"enabled": False}}}
                for op in ("createMigration", "createPlan")],
        }))
    _VALID_KEY = _network_key_is_valid()

    def _valid_request(request):
        networks = request.get("networks")
        return (not isinstance(networks, dict)
                or all(_VALID_KEY(k) for k in networks)) \
            and _valid_name(request.get("project")) \
            and _valid_name(request.get("volume_type")) \
            and _valid_name(request.get("aggregate")) \
            and all(_valid_map(request.get(f), f) for f in maps.FIELDS) \
            and _valid_times(request)

    def _valid_times(request):
        # Whether a start_at or a cutover window is acceptable depends on
        # the clock (a window already over is a 400 naming it), which the
        # document cannot say: the conductor's own check decides.
        if not any(request.get(k) is not None
                   for k in ("start_at", "cutover_window")):
            return True
        try:
            request_schema.check_schedule(request, {}, request.get("mode"))
        except (exception.Invalid, TypeError, ValueError):
            return False
        return True

    def _plan_start_given_once(plan):
        # A plan's start_at and its defaults' are one setting: both is a
        # 400 naming it (conductor/plans.py).
        defaults = plan.get("defaults")
        return not (plan.get("start_at") is not None
                    and isinstance(defaults, dict)
                    and defaults.get("start_at") is not None)

    @SCHEMA.hook
    def filter_body(context, body):
        """A migration request, or a plan's defaults and each VM's
        overrides (the same fields, the same checks)."""
        if not isinstance(body, dict):
            return True
        requests = []
        if isinstance(body.get("migration"), dict):
            requests.append(body["migration"])
        plan = body.get("plan")
        if isinstance(plan, dict):
            if not (_plan_start_given_once(plan) and _valid_times(
                    {"start_at": plan.get("start_at")})):
                return False
            requests.append(plan.get("defaults"))
            requests += [vm.get("overrides") for vm in plan.get("vms") or []
                         if isinstance(vm, dict)]
        return all(_valid_request(r) for r in requests
                   if isinstance(r, dict))

    FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                    derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))

    @SCHEMA.parametrize()
    @FUZZ
    def test_every_operation(case, api):
        case.call_and_validate(base_url=api.url, headers=LATEST,
                               timeout=30)

    def test_operation_sequences(api):
        # Follows the document's links: create, then show and act on the
        # migration created, in random orders.
        class Sequences(SCHEMA.as_state_machine()):
            def get_call_kwargs(self, case):
                return {"base_url": api.url, "headers": LATEST,
                        "timeout": 30}

        Sequences.run(settings=settings(
            FUZZ, max_examples=EXAMPLES // 2, stateful_step_count=6))


def test_no_request_got_a_server_error(api, capsys):
    with open(api.log_file, errors="replace") as f:
        f.seek(api.fuzz_log_offset)
        log = f.read()
    statuses = [m.group(1) for m in map(ACCESS_LINE.search,
                                        log.splitlines()) if m]
    server_errors = [s for s in statuses if s.startswith("5")]
    with capsys.disabled():
        print("\nschemathesis: %d requests to cs2os-api, %d answered 5xx "
              "(%s)" % (len(statuses), len(server_errors), ", ".join(
                  "%s: %d" % (s, statuses.count(s))
                  for s in sorted(set(statuses)))))
    # The operations' tests above ran first (file order) and sent far
    # more than this.
    assert len(statuses) > 4 * EXAMPLES, "the fuzzing did not run"
    assert server_errors == []
    assert "failed unexpectedly" not in log
