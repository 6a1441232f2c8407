"""The minicloud does what the cs2os method needs from Nova.

A server booted from a Glance image with no network on a chosen compute
host (microversions 2.37, 2.74) goes ACTIVE on C = <instances_path>/<uuid>/
disk, a qcow2 overlay on D = <instances_path>/_base/<sha1(image id)>, raw;
the guest runs from it; Nova stops (SHUTOFF) and starts it; deleting it
removes the instance directory and the libvirt domain.
"""

import json
import os
import time
import uuid

import openstack.exceptions
import pytest

from tools.testbed.minicloud import smoke


def test_boot_stop_start_delete(minicloud, tmp_path):
    conn, info = minicloud.conn, minicloud.info
    timings = {}
    t = time.monotonic()
    message = "cs2os e2e %s" % uuid.uuid4().hex
    image = smoke.upload_image(conn, str(tmp_path), message,
                               name="cs2os-e2e-%s" % uuid.uuid4().hex[:8])
    try:
        timings["image"] = time.monotonic() - t
        t = time.monotonic()
        server = smoke.boot(conn, info, image,
                            name="cs2os-e2e-%s" % uuid.uuid4().hex[:8])
        try:
            timings["boot"] = time.monotonic() - t
            assert server.compute_host == minicloud.compute_host
            prefix = info["instance_name_template"].split("%")[0]
            assert server.instance_name.startswith(prefix)
            assert smoke.disk_chain_problems(info, server, image) == []
            assert smoke.wait_console(info, server, message), (
                "the guest did not print %r on its console" % message)

            t = time.monotonic()
            conn.compute.stop_server(server)
            conn.compute.wait_for_server(server, status="SHUTOFF",
                                         failures=["ERROR"], wait=120)
            timings["stop"] = time.monotonic() - t
            assert smoke.domain_state(info, server) == "shut off"
            # Nova keeps the instance's files while it is stopped.
            assert smoke.disk_chain_problems(info, server, image) == []

            t = time.monotonic()
            conn.compute.start_server(server)
            conn.compute.wait_for_server(server, status="ACTIVE",
                                         failures=["ERROR"], wait=120)
            timings["start"] = time.monotonic() - t
            assert smoke.domain_state(info, server) == "running"
        finally:
            t = time.monotonic()
            conn.compute.delete_server(server)
            conn.compute.wait_for_delete(server, wait=120)
            timings["delete"] = time.monotonic() - t
        assert not os.path.exists(
            os.path.join(minicloud.instances_path, server.id))
        assert smoke.domain_state(info, server) == ""
    finally:
        conn.image.delete_image(image, ignore_missing=True)
    print("minicloud timings (s): %s"
          % json.dumps({k: round(v, 1) for k, v in timings.items()}))


def test_demo_project(minicloud):
    """The demo user (project demo, role member) of clouds.yaml works and
    is no admin: it sees the flavors, not the compute services."""
    conn = minicloud.connect(minicloud.info["demo_cloud"])
    try:
        assert {"m1.tiny", "m1.small"} <= {
            f.name for f in conn.compute.flavors()}
        with pytest.raises(openstack.exceptions.ForbiddenException):
            list(conn.compute.services())
    finally:
        conn.close()
