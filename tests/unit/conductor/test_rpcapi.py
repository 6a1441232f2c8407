"""The conductor's RPC API: what goes on the wire, and back."""

import types

import oslo_messaging as messaging
import pytest
from oslo_config import cfg
from oslo_messaging import conffixture

from cs2os_agent.common import exception
from cs2os_agent.common import rpc
from cs2os_agent.conductor import manager
from cs2os_agent.conductor import rpcapi
from tests.unit.conductor.helpers import CTXT
from tests.unit.conductor.helpers import held


class RecordingClient:
    """oslo.messaging's RPCClient as ConductorAPI uses it."""

    def __init__(self):
        self.calls = []

    def prepare(self, version=None, timeout=None):
        def call(ctxt, method, **kwargs):
            self.calls.append((version, method, kwargs))
            return {"id": kwargs.get("migration_id")}
        return types.SimpleNamespace(call=call)


@pytest.fixture
def recording_api():
    api_ = rpcapi.ConductorAPI.__new__(rpcapi.ConductorAPI)
    api_.client, api_.timeout = RecordingClient(), None
    return api_


def test_rpc_cutover_sends_1_1_without_a_method_and_1_2_with_one(
        recording_api):
    recording_api.cutover_migration(CTXT, "m-1")
    recording_api.cutover_migration(CTXT, "m-1", method="force")
    recording_api.cutover_migration(CTXT, "m-1", "shutdown")
    # A 1.1 conductor still takes the call without a method.
    assert recording_api.client.calls == [
        ("1.1", "cutover_migration", {"migration_id": "m-1"}),
        ("1.2", "cutover_migration", {"migration_id": "m-1",
                                      "cutover_method": "force"}),
        ("1.2", "cutover_migration", {"migration_id": "m-1",
                                      "cutover_method": "shutdown"})]
    assert rpcapi.RPC_API_VERSION == "1.10"
    assert manager.ConductorManager.target.version == "1.10"


def test_rpc_create_names_the_version_its_fields_need(recording_api):
    for request in ({"source": "a"}, {"source": "a", "mode": "warm",
                                      "cutover_method": "force"},
                    {"source": "a", "project": "acme"},
                    {"source": "a", "config_drive": True,
                     "cutover_method": "force"},
                    {"source": "a", "keep_snapshots": True,
                     "project": "acme"},
                    {"source": "a", "volume_type": "ssd",
                     "keep_snapshots": True},
                    {"source": "a", "start_at": "2030-01-01T00:00:00Z",
                     "volume_type": "ssd"},
                    {"source": "a", "mode": "warm", "cutover_window": {
                        "start": "2030-01-01T00:00:00Z",
                        "end": "2030-01-01T01:00:00Z"}},
                    {"source": "a", "aggregate": "wave-3",
                     "start_at": "2030-01-01T00:00:00Z"},
                    {"source": "a", "aggregate": "wave-3",
                     "flavor_map": {"Small": "m1.small"}},
                    {"source": "a", "mode": "live", "flavor_map": {}},
                    {"source": "a", "mode": "warm", "live_fallback": True}):
        recording_api.create_migration(CTXT, request)
    recording_api.create_plan(CTXT, {"name": "p", "vms": ["a"]})
    recording_api.create_plan(CTXT, {"name": "p", "vms": ["a"],
                                     "limits": {"max_in_flight": 2}})
    recording_api.create_plan(CTXT, {"name": "p", "vms": ["a"],
                                     "defaults": {"aggregate": "wave-3"}})
    recording_api.create_plan(CTXT, {"name": "p", "vms": [
        "a", {"vm": "b", "overrides": {"aggregate": "wave-3"}}],
        "limits": {"max_in_flight": 2}})
    recording_api.create_plan(CTXT, {"name": "p", "vms": ["a"],
                                     "defaults": {"project_map": {}}})
    recording_api.create_plan(CTXT, {"name": "p", "vms": [
        {"vm": "b", "overrides": {"volume_type_map": {"p": "ssd"}}}]})
    recording_api.create_plan(CTXT, {"name": "p", "vms": ["a"],
                                     "defaults": {"mode": "live"}})
    recording_api.create_plan(CTXT, {"name": "p", "vms": [
        {"vm": "b", "overrides": {"live_fallback": False}}]})
    assert [c[0] for c in recording_api.client.calls] == [
        "1.0", "1.2", "1.3", "1.3", "1.4", "1.6", "1.7", "1.7", "1.8",
        "1.9", "1.10", "1.10", "1.5", "1.7", "1.8", "1.8", "1.9", "1.9",
        "1.10", "1.10"]


@pytest.fixture
def conductor_api(mgr):
    """ConductorAPI -> oslo.messaging (its in-process fake driver) ->
    the RPC server's dispatcher -> ``mgr``: what goes on the wire."""
    conf = cfg.ConfigOpts()
    conf([], project="cs2os", default_config_files=[])
    conf_fixture = conffixture.ConfFixture(conf)
    conf_fixture.setUp()
    saved = rpc.TRANSPORT
    rpc.TRANSPORT = messaging.get_rpc_transport(
        conf, url="fake:/", allowed_remote_exmods=rpc.ALLOWED_EXMODS)
    server = rpc.get_server(messaging.Target(topic=rpcapi.TOPIC,
                                             server="ctl-1"), [mgr])
    server.start()
    try:
        yield rpcapi.ConductorAPI(timeout=10)
    finally:
        server.stop()
        server.wait()
        rpc.TRANSPORT.cleanup()
        rpc.TRANSPORT = saved
        conf_fixture.cleanUp()


def test_rpc_cutover_with_a_method_reaches_the_conductor(mgr, conductor_api):
    mid = held(mgr)
    record = conductor_api.cutover_migration(CTXT, mid)
    assert "method" not in record["options"]["cutover_requested"]
    record = conductor_api.cutover_migration(CTXT, mid, method="force")
    assert record["options"]["cutover_requested"]["method"] == "force"
    assert record["options"]["cutover_requested"]["by"] == "alice"
    # The conductor's verdicts come back as themselves.
    with pytest.raises(exception.Invalid, match="cutover method reboot"):
        conductor_api.cutover_migration(CTXT, mid, method="reboot")
    created = conductor_api.create_migration(CTXT, {
        "source": "vm", "mode": "warm", "cutover_method": "force"})
    assert created["options"]["cutover_method"] == "force"
