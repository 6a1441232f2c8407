"""cs2os-conductor as its own process: RPC API, records, notifications.

Real RabbitMQ, a real database made by ``cs2os-manage db sync``, and the
CloudStack API stand-in over HTTP.  The whole flow against a real Nova is
in tests/e2e; here the service itself is under test: requests are
recorded and validated, a failing migration ends failed with a message that
names the problem, notifications reach the bus, retry and cancel obey the
states, and a migration a dead conductor left behind is taken over.
"""

import datetime
import json
import os
import threading
import time

import kombu
import pytest

from cs2os_agent.common import context as cs2os_context
from cs2os_agent.common import exception
from cs2os_agent.conductor import notify
from cs2os_agent.conductor import rpcapi as conductor_rpcapi
from cs2os_agent.db import api as db_api
from cs2os_agent.db import migration as db_migration
from tests.functional import checks
from tools.testbed import conductor_process
from tools.testbed import harness
from tools.testbed.harness import wait_state

RUN_ID = harness.RUN_ID
TOPIC = "notifications-%s" % RUN_ID


class Notifications:
    def __init__(self):
        self.received = []
        self._cond = threading.Condition()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._add(ctxt, event_type, payload)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._add(ctxt, event_type, payload)

    def _add(self, ctxt, event_type, payload):
        with self._cond:
            self.received.append((event_type, payload, ctxt))
            self._cond.notify_all()

    @staticmethod
    def migration_id(payload):
        # A versioned MigrationPayload (cs2os_agent.conductor.notify).
        return (payload.get("cs2os_object.data") or {}).get("id")

    def of(self, migration_id):
        """[(event type, payload, context)] of one migration."""
        with self._cond:
            return [r for r in self.received
                    if self.migration_id(r[1]) == migration_id]

    def wait_for(self, migration_id, event_types, timeout=60):
        def seen():
            return [t for t, p, c in self.received
                    if self.migration_id(p) == migration_id]

        with self._cond:
            if not self._cond.wait_for(
                    lambda: set(event_types) <= set(seen()), timeout):
                raise AssertionError("saw only %s" % seen())
            return seen()


class RawNotifications:
    """The notification messages' bodies as RabbitMQ delivers them: a queue
    of our own bound to the notification topic's routing keys (RPC
    messages, which carry the caller's context, are not routed to it)."""

    def __init__(self, exchange):
        self._conn = kombu.Connection(
            harness.TRANSPORT_URL.replace("rabbit://", "amqp://", 1))
        # As oslo.messaging's rabbit driver declares it (not durable).
        self._queue = kombu.Queue(
            "raw-%s" % TOPIC,
            kombu.Exchange(exchange, type="topic", durable=False),
            routing_key="%s.*" % TOPIC, durable=False)(
                self._conn.default_channel)
        self._queue.declare()
        self.bodies = []

    def drain(self):
        while True:
            message = self._queue.get(no_ack=True)
            if message is None:
                return self.bodies
            self.bodies.append(message.body.decode()
                               if isinstance(message.body, bytes)
                               else message.body)

    def close(self):
        self._queue.delete()
        self._conn.release()


@pytest.fixture(scope="module")
def notifications(services):
    with checks.notification_listener(Notifications(), TOPIC) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def raw_notifications(services):
    tap = RawNotifications(services["exchange"])
    yield tap
    tap.close()


@pytest.fixture(scope="module")
def conductor_api(services):
    return conductor_rpcapi.ConductorAPI()


@pytest.fixture(scope="module")
def db_url(workdir):
    return "sqlite:///%s" % os.path.join(workdir, "conductor.sqlite")


@pytest.fixture(scope="module")
def conductor(workdir, services, cloud, conductor_api, db_url,
              notifications):
    proc = conductor_process.ConductorProcess(
        workdir, "cs2os-test-%s-conductor" % RUN_ID, harness.TRANSPORT_URL,
        services["exchange"], db_url, TOPIC, lease_seconds=30,
        sections={"cloudstack": {"endpoint": cloud.endpoint,
                                 "api_key": cloud.admin.apikey,
                                 "secret_key": cloud.admin.secretkey,
                                 "job_poll_interval": 0.2}})
    proc.synced = proc.manage("db", "sync")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def ctxt():
    return cs2os_context.RequestContext(user_id="operator",
                                        project_id="admin-project")


def test_db_sync_and_version(conductor):
    head = db_migration.head_version()
    assert "database at revision %s" % head in conductor.synced
    assert conductor.manage("db", "version").strip() == \
        "current: %s, latest: %s" % (head, head)


def test_unknown_vm_fails_with_a_clear_error(conductor, conductor_api, ctxt,
                                             notifications, cloud):
    created = conductor_api.create_migration(ctxt, {"source": "no-such-vm"})
    assert (created["state"], created["step"]) == ("queued", "validate")
    assert created["user_id"] == "operator"
    failed = wait_state(conductor_api, ctxt, created["id"], ("failed",))
    assert failed["step"] == "validate"
    assert "no-such-vm" in failed["error"]
    assert failed["finished_at"]
    assert [e["kind"] for e in failed["events"]][-1] in ("error",
                                                         "rollback")
    seen = notifications.wait_for(created["id"], {
        "cs2os.migration.create", "cs2os.migration.start",
        "cs2os.migration.error"})
    assert seen.index("cs2os.migration.create") < seen.index(
        "cs2os.migration.error")
    # The stand-in saw a signed listVirtualMachines for it.
    assert any(call[1] == "listVirtualMachines" for call in cloud.calls)


def test_notifications_carry_no_token_and_no_internals(
        conductor, conductor_api, notifications, raw_notifications):
    token = "secret-token-xyz"
    ctxt = cs2os_context.RequestContext(
        user_id="operator", project_id="admin-project", auth_token=token,
        service_token="secret-service-token-%s" % RUN_ID, overwrite=False)
    created = conductor_api.create_migration(
        ctxt, {"source": "no-such-vm-%s" % RUN_ID})
    wait_state(conductor_api, ctxt, created["id"], ("failed",))
    notifications.wait_for(created["id"], {
        "cs2os.migration.create", "cs2os.migration.start",
        "cs2os.migration.error"})
    for event_type, payload, context in notifications.of(created["id"]):
        assert payload["cs2os_object.name"] == "MigrationPayload"
        assert payload["cs2os_object.version"] == "1.2"
        data = payload["cs2os_object.data"]
        assert set(data) == set(notify.FIELDS), event_type
        assert (data["user_id"], data["project_id"]) == (
            "operator", "admin-project")
        # msg_id, reply_q, client_timeout: added by the receiving driver.
        sent = set(context) - {"msg_id", "reply_q", "client_timeout"}
        assert sent == set(notify.CONTEXT_FIELDS), event_type
        assert context["user_id"] == "operator"
        assert context["project_id"] == "admin-project"
        assert context["request_id"] == ctxt.request_id
    # What RabbitMQ delivered, byte for byte: no token anywhere in it.
    bodies = [b for b in raw_notifications.drain() if created["id"] in b]
    assert len(bodies) >= 3, bodies
    for body in bodies:
        assert token not in body
        assert "secret-service-token" not in body
        assert "auth_token" not in body
        assert "lease_until" not in body
        message = json.loads(json.loads(body)["oslo.message"])
        assert {k[len("_context_"):] for k in message
                if k.startswith("_context_")} == set(notify.CONTEXT_FIELDS)


def test_list_filters_retry_and_cancel_rules(conductor, conductor_api, ctxt):
    created = conductor_api.create_migration(ctxt, {"source": "ghost-vm"})
    failed = wait_state(conductor_api, ctxt, created["id"], ("failed",))
    listed = conductor_api.list_migrations(ctxt, {"state": "failed"})
    assert created["id"] in [m["id"] for m in listed]
    assert "events" not in listed[0]
    only_one = conductor_api.list_migrations(ctxt, {"state": "failed"},
                                             limit=1)
    assert len(only_one) == 1
    with pytest.raises(exception.MigrationStateConflict):
        conductor_api.cancel_migration(ctxt, created["id"])
    retried = conductor_api.retry_migration(ctxt, created["id"])
    assert retried["state"] in ("queued", "running", "failed")
    again = wait_state(conductor_api, ctxt, created["id"], ("failed",))
    assert again["finished_at"] >= failed["finished_at"]
    messages = [e["message"] for e in again["events"]]
    assert "retry requested by operator" in messages


def test_bad_requests_are_refused_with_their_type(conductor, conductor_api,
                                                 ctxt):
    with pytest.raises(exception.Invalid,
                       match="warm and live migrations only"):
        conductor_api.create_migration(ctxt, {"source": "vm",
                                              "cutover": "manual"})
    with pytest.raises(exception.MigrationNotFound):
        conductor_api.get_migration(ctxt, "00000000-0000-0000-0000-0")
    with pytest.raises(exception.Invalid, match="unknown filter"):
        conductor_api.list_migrations(ctxt, {"colour": "red"})


def test_progress_reports_land_on_the_record(conductor, conductor_api,
                                             ctxt):
    created = conductor_api.create_migration(ctxt, {"source": "vm-p"})
    wait_state(conductor_api, ctxt, created["id"], ("failed",))
    conductor_api.report_progress(ctxt, created["id"], {
        "bytes_done": 10, "bytes_total": 40, "rate_bps": 5})
    deadline = time.monotonic() + 10
    while conductor_api.get_migration(ctxt, created["id"])[
            "bytes_done"] != 10:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_dead_conductors_migration_is_taken_over(conductor, conductor_api,
                                                  ctxt, db_url):
    db = db_api.Database(db_url)
    orphan = db.create_migration({
        "id": "orphan-%s" % RUN_ID, "source_ref": "orphan-vm",
        "state": "running", "step": "validate", "options": {},
        "source": {}, "resources": {}, "result": {},
        "conductor": "a-conductor-that-died",
        "lease_until": datetime.datetime(2001, 1, 1)})
    # The running conductor adopts expired claims every lease/3 seconds.
    taken = wait_state(conductor_api, ctxt, orphan["id"], ("failed",),
                       timeout=60)
    assert taken["conductor"] == conductor.host
    assert "orphan-vm" in taken["error"]


def test_restarted_conductor_resumes_its_work(conductor, conductor_api,
                                              ctxt, db_url):
    conductor.stop()
    db = db_api.Database(db_url)
    queued = db.create_migration({
        "id": "while-down-%s" % RUN_ID, "source_ref": "later-vm",
        "state": "queued", "step": "validate", "options": {},
        "source": {}, "resources": {}, "result": {}})
    conductor.start()
    done = wait_state(conductor_api, ctxt, queued["id"], ("failed",))
    assert "later-vm" in done["error"]

