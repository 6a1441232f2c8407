from oslo_messaging._drivers import common as rpc_common

from cs2os_agent.common import exception
from cs2os_agent.common import rpc


def test_message_is_filled_from_kwargs():
    exc = exception.DomainNotShutOff(instance_uuid="u-1", state="running")
    assert str(exc) == (
        "Instance u-1 domain is running; it must be shut off (stop the "
        "server through Nova) before its disk can be swapped"
    )
    assert exc.kwargs == {"instance_uuid": "u-1", "state": "running"}
    assert exc.code == 409


def test_explicit_message_wins():
    assert str(exception.Invalid("plain words")) == "plain words"


def test_missing_kwarg_keeps_template_instead_of_crashing():
    exc = exception.OverlayTooLarge(overlay_size=1)
    assert "Overlay virtual size" in str(exc)


def test_kwargs_are_made_rpc_safe():
    exc = exception.ImageCorrupt(path="/x", reason=ValueError("bad"))
    assert exc.kwargs["reason"] == "bad"


def test_survives_an_rpc_round_trip_with_its_type():
    original = exception.OverlayTooLarge(overlay_size=20, disk_size=10)
    wire = rpc_common.serialize_remote_exception((
        type(original), original, None))
    received = rpc_common.deserialize_remote_exception(
        wire, rpc.ALLOWED_EXMODS)
    assert isinstance(received, exception.OverlayTooLarge)
    assert received.kwargs == original.kwargs
    assert str(original) in str(received)


def test_foreign_module_does_not_cross_as_its_type():
    wire = rpc_common.serialize_remote_exception((
        KeyError, KeyError("k"), None))
    received = rpc_common.deserialize_remote_exception(
        wire, rpc.ALLOWED_EXMODS)
    assert not isinstance(received, exception.Cs2osException)


def _raised_remotely(exc):
    try:
        raise exc
    except Exception as caught:  # noqa: BLE001
        wire = rpc_common.serialize_remote_exception(
            (type(caught), caught, caught.__traceback__))
    return rpc_common.deserialize_remote_exception(wire, rpc.ALLOWED_EXMODS)


def test_describe_leaves_the_remote_traceback_to_the_logs():
    received = _raised_remotely(
        exception.MigrationStateConflict(migration_id="m", state="failed",
                                         action="cancel"))
    assert "Traceback" in str(received)
    assert exception.describe(received) == \
        "Migration m is failed: cannot cancel"
    foreign = _raised_remotely(KeyError("k"))
    assert "Traceback" in str(foreign)
    assert "Traceback" not in exception.describe(foreign)
    assert "KeyError" in exception.describe(foreign)
