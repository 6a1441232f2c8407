"""cs2os.migration.* notifications: a fixed payload, a context of ids only.

The notifier is the real one (oslo.messaging's messagingv2 driver on its
rabbit driver) over kombu's in-memory broker, and each test reads the raw
AMQP message body the driver published, as a consumer on RabbitMQ would.
"""

import json
import uuid

import kombu
import pytest
from oslo_config import cfg

from cs2os_agent.common import context as cs2os_context
from cs2os_agent.conductor import notify

TOKEN = "secret-token-xyz"
SERVICE_TOKEN = "secret-service-token-abc"

# A whole record as cs2os_agent.db.api returns it, internal fields and all.
RECORD = {
    "id": "0b7f3e0c-0000-4000-8000-000000000001",
    "created_at": "2024-05-01T10:00:00", "updated_at": "2024-05-01T10:05:00",
    "started_at": "2024-05-01T10:00:01", "finished_at": None,
    "source_ref": "web-1", "mode": "warm", "target_host": "compute-1",
    "flavor": "m1.small", "delete_source": True,
    "options": {"networks": {"guest": "private"}, "aggregate": "wave-3",
                "cutover_requested": {"by": "alice", "at": "..."}},
    "user_id": "alice", "project_id": "p-1", "request_id": "req-create",
    "source_vm_id": "cs-vm-1", "source_vm_name": "web-1",
    "source": {"hostname": "kvm-7", "root_volume": {"path": "/mnt/x/y"}},
    "compute_host": "compute-1", "state": "failed", "step": "sync",
    "resources": {"server_id": "srv-1", "image_id": "img-1",
                  "overlay_source": {"transport": "ssh", "host": "kvm-7"}},
    "result": {"rolled_back": ["deleted server srv-1"],
               "template_sha512": "ab" * 64,
               "warnings": [{"step": "cleanup", "message": "left x"}]},
    "target_project_id": "p-acme",
    "error": "copy failed", "bytes_done": 10, "bytes_total": 40,
    "rate_bps": 5, "conductor": "lease-holder-9",
    "lease_until": "2024-05-01T10:06:00", "lease_epoch": 7,
    "active_source": "cs-vm-1", "idempotency_key": "client-key-1",
    "committed": False, "bytes_moved": 1234,
    "events": [{"created_at": "...", "step": "sync", "kind": "error",
                "message": "copy failed"}],
}


@pytest.fixture
def topic():
    # kombu's in-memory broker is one per process: a topic per test.
    return "unit-notifications-%s" % uuid.uuid4().hex[:8]


@pytest.fixture
def notifier(tmp_path, topic):
    path = tmp_path / "cs2os.conf"
    path.write_text(
        "[DEFAULT]\n"
        "transport_url = kombu+memory:////\n"
        "control_exchange = cs2os-unit\n"
        "[oslo_messaging_notifications]\n"
        "driver = messagingv2\n"
        "topics = %s\n"
        "[oslo_messaging_rabbit]\n"
        "heartbeat_timeout_threshold = 0\n" % topic)
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)], project="cs2os")
    n = notify.MigrationNotifier(conf, "conductor-1")
    yield n
    n._notifier.transport.cleanup()


def sent(topic, priority):
    """The raw bodies the driver published for ``topic.priority``."""
    bodies = []
    with kombu.Connection("memory://") as conn:
        queue = conn.SimpleQueue("%s.%s" % (topic, priority))
        try:
            while True:
                try:
                    message = queue.get(timeout=0.2)
                except queue.Empty:
                    break
                bodies.append(message.body)
                message.ack()
        finally:
            queue.close()
    return bodies


def unpack(body):
    envelope = json.loads(body)
    assert envelope["oslo.version"] == "2.0"
    return json.loads(envelope["oslo.message"])


def caller_context():
    return cs2os_context.RequestContext(
        user_id="alice", project_id="p-1", auth_token=TOKEN,
        service_token=SERVICE_TOKEN, service_user_id="nova",
        roles=["member"], request_id="req-caller",
        global_request_id="req-global", overwrite=False)


def test_payload_holds_exactly_the_declared_fields():
    payload = notify.migration_payload(RECORD)
    assert set(payload) == {
        "cs2os_object.name", "cs2os_object.namespace",
        "cs2os_object.version", "cs2os_object.data"}
    assert payload["cs2os_object.name"] == "MigrationPayload"
    assert payload["cs2os_object.namespace"] == "cs2os"
    assert payload["cs2os_object.version"] == "1.2"
    data = payload["cs2os_object.data"]
    assert list(data) == list(notify.FIELDS)
    assert (data["aggregate"], data["bytes_moved"]) == ("wave-3", 1234)
    assert data["id"] == RECORD["id"]
    assert (data["state"], data["step"], data["mode"]) == ("failed", "sync",
                                                           "warm")
    assert (data["server_id"], data["image_id"]) == ("srv-1", "img-1")
    assert data["rolled_back"] == ["deleted server srv-1"]
    assert data["source_deleted"] is False
    assert (data["target_project_id"], data["committed"]) == ("p-acme",
                                                              False)
    assert data["warnings"] == ["left x"]
    assert data["created_at"] == "2024-05-01T10:00:00"
    for internal in ("conductor", "lease_until", "lease_epoch",
                     "active_source", "idempotency_key", "options", "source",
                     "resources", "result", "events", "rate_bps"):
        assert internal not in data


def test_fields_of_a_new_record_are_all_there():
    data = notify.migration_payload({"id": "m", "state": "queued"})[
        "cs2os_object.data"]
    assert list(data) == list(notify.FIELDS)
    assert data["server_id"] is None and data["rolled_back"] == []
    assert data["aggregate"] is None and data["bytes_moved"] is None


def test_the_message_on_the_wire_carries_no_credentials(notifier, topic):
    notifier.emit(caller_context(), "create", RECORD)
    (body,) = sent(topic, "info")
    raw = body.decode()
    assert TOKEN not in raw and SERVICE_TOKEN not in raw
    for internal in ("lease-holder-9", "lease_until", "lease_epoch",
                     "client-key-1", "cutover_requested", "kvm-7",
                     "/mnt/x/y", "template_sha512"):
        assert internal not in raw
    message = unpack(body)
    assert message["event_type"] == "cs2os.migration.create"
    assert message["publisher_id"] == "cs2os-conductor.conductor-1"
    assert message["payload"] == json.loads(json.dumps(
        notify.migration_payload(RECORD)))
    context = {k[len("_context_"):]: v for k, v in message.items()
               if k.startswith("_context_")}
    assert set(context) == set(notify.CONTEXT_FIELDS)
    assert context["user_id"] == context["user"] == "alice"
    assert context["project_id"] == context["project"] == "p-1"
    # The creating request's id (the record's), and the caller's global id.
    assert context["request_id"] == "req-create"
    assert context["global_request_id"] == "req-global"


def test_an_error_goes_out_at_error_priority(notifier, topic):
    notifier.emit(caller_context(), "error", RECORD)
    (body,) = sent(topic, "error")
    message = unpack(body)
    assert message["event_type"] == "cs2os.migration.error"
    assert message["priority"] == "ERROR"
    assert message["payload"]["cs2os_object.data"]["error"] == "copy failed"
    assert TOKEN not in body.decode()
    assert sent(topic, "info") == []


def test_the_conductors_admin_context_names_the_requester(notifier, topic):
    # start/end/error are sent from the conductor's own admin context.
    admin = cs2os_context.get_admin_context()
    admin.auth_token = TOKEN
    notifier.emit(admin, "end", dict(RECORD, state="succeeded"))
    (body,) = sent(topic, "info")
    message = unpack(body)
    assert message["_context_user_id"] == "alice"
    assert message["_context_project_id"] == "p-1"
    assert "_context_is_admin" not in message
    assert "_context_roles" not in message
    assert TOKEN not in body.decode()


def test_emitting_leaves_the_callers_context_alone(notifier, topic):
    ctxt = caller_context()
    notifier.emit(ctxt, "create", RECORD)
    sent(topic, "info")
    assert ctxt.auth_token == TOKEN  # not redacted in place
    assert ctxt.service_token == SERVICE_TOKEN


def test_context_serializer_whitelists_plain_dicts_too():
    serializer = notify.NotificationSerializer()
    out = serializer.serialize_context(
        {"user_id": "u", "auth_token": TOKEN, "project_id": "p"})
    assert set(out) == set(notify.CONTEXT_FIELDS)
    assert TOKEN not in json.dumps(out)
    assert (out["user"], out["project_id"]) == ("u", "p")
