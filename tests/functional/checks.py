"""What only the tests add to the test bed (tools/testbed): pytest checks.

Nothing is assumed: before the first functional or end-to-end test each
component is checked, and a missing one fails the run (never skips it)
with a message saying how to provide it (tools/test-services.sh start).
And one assertion several test modules make: an agent call that must fail
changes nothing on disk.
"""

import contextlib
import os
import shutil
import subprocess
import uuid

import libvirt
import pytest

from tools.testbed import harness
from tools.testbed import images


def require_binaries():
    missing = [
        b for b in ("qemu-img", "qemu-io", "qemu-system-x86_64")
        if shutil.which(b) is None
    ]
    if missing:
        pytest.fail("missing %s (tools/install-deps.sh installs them)"
                    % ", ".join(missing), pytrace=False)


def require_broker():
    import kombu

    # kombu names oslo.messaging's rabbit:// scheme amqp://.
    url = harness.BROKER_URL.replace("rabbit://", "amqp://", 1)
    try:
        with kombu.Connection(url, connect_timeout=5) as c:
            c.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001
        pytest.fail("RabbitMQ at %s is not reachable (%s); %s"
                    % (harness.BROKER_URL, exc, harness.HINT),
                    pytrace=False)


def rabbitmqctl(*args):
    try:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True,
                       capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail("rabbitmqctl %s failed (%s); the tests need the "
                    "broker's rabbitmqctl to make a vhost per run"
                    % (" ".join(args), exc), pytrace=False)


def require_libvirt():
    try:
        conn = libvirt.open(harness.LIBVIRT_URI)
    except libvirt.libvirtError as exc:
        pytest.fail("libvirtd at %s is not reachable (%s); %s"
                    % (harness.LIBVIRT_URI, exc, harness.HINT),
                    pytrace=False)
    conn.close()
    if not os.path.exists("/dev/kvm"):
        pytest.fail("/dev/kvm is missing: KVM guests cannot run",
                    pytrace=False)


def sync_expecting(agent, agent_api, ctxt, inst, source, exc_type):
    """sync_overlay must fail with ``exc_type`` and change nothing."""
    before = images.dir_state(inst.instance_dir)
    with pytest.raises(exc_type) as err:
        agent_api.sync_overlay(ctxt, agent.host, "mig-bad-%s" % uuid.uuid4(),
                               inst.uuid, source)
    assert images.dir_state(inst.instance_dir) == before
    return str(err.value)


@contextlib.contextmanager
def notification_listener(endpoint, topic):
    """``endpoint`` receives the notifications on ``topic`` of the
    session's bus (conf.CONF's notification transport) meanwhile."""
    import oslo_messaging as messaging

    from cs2os_agent import conf
    listener = messaging.get_notification_listener(
        messaging.get_notification_transport(conf.CONF),
        [messaging.Target(topic=topic)], [endpoint], executor="threading")
    listener.start()
    try:
        yield endpoint
    finally:
        listener.stop()
        listener.wait()
