"""The minicloud's smoke test, through openstacksdk as the conductor works.

    smoke.py STATE_DIR

Uploads a tiny bootable image (make_image.py) to Glance, boots it with no
network on the compute host (microversions 2.37 and 2.74), waits ACTIVE,
checks Nova's disk layout the cs2os method relies on (<instances_path>/<uuid>/
disk = qcow2 overlay on the raw cache _base/<sha1(image id)>) and that the
guest ran from it (its line on the serial console), stops it through Nova
(SHUTOFF), starts it, deletes it and the image; prints the time of each step.
The functions are reused by tests/e2e.
"""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

import openstack
import openstack.config

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name):
    # By path: this file is also loaded by tests/e2e, where tools/minicloud
    # is no package and not on sys.path.
    spec = importlib.util.spec_from_file_location(
        "_minicloud_" + name, os.path.join(HERE, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_image = _load("make_image")


def load_info(state_dir):
    """minicloud.json, written by up.sh once the cloud is ready."""
    with open(os.path.join(state_dir, "minicloud.json")) as f:
        return json.load(f)


def connect(info, cloud=None):
    config = openstack.config.OpenStackConfig(
        config_files=[info["clouds_yaml"]])
    region = config.get_one(cloud=cloud or info["admin_cloud"])
    return openstack.connection.Connection(config=region)


def upload_image(conn, workdir, message, name=None):
    """A qcow2 image of make_image's boot disk; returns the Glance image."""
    raw = os.path.join(workdir, "boot.raw")
    qcow2 = os.path.join(workdir, "boot.qcow2")
    with open(raw, "wb") as f:
        f.write(make_image.boot_disk(message))
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2",
                    raw, qcow2], check=True)
    return conn.image.create_image(
        name=name or "minicloud-smoke-%s" % uuid.uuid4().hex[:8],
        filename=qcow2, disk_format="qcow2", container_format="bare",
        wait=True, timeout=120)


def boot(conn, info, image, flavor="m1.tiny", name=None, timeout=180):
    """A server with no network on the minicloud's compute host, ACTIVE."""
    flavors = [f for f in conn.compute.flavors() if f.name == flavor]
    if not flavors:
        raise LookupError("no flavor %r in the minicloud" % flavor)
    server = conn.compute.create_server(
        name=name or "minicloud-smoke-%s" % uuid.uuid4().hex[:8],
        image_id=image.id,
        flavor_id=flavors[0].id,
        networks="none",  # microversion >= 2.37
        host=info["compute_host"],  # microversion >= 2.74
    )
    return conn.compute.wait_for_server(server, status="ACTIVE",
                                        failures=["ERROR"], wait=timeout)


def qemu_img_info(path):
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", path],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def disk_chain_problems(info, server, image):
    """What is wrong with the server's disk chain, compared with the method's
    expectation (C = qcow2 overlay on D = raw _base/<sha1(image id)>)."""
    disk = os.path.join(info["instances_path"], server.id, "disk")
    # Nova's name for the image cache entry, not a security use of SHA-1.
    name = hashlib.sha1(image.id.encode(), usedforsecurity=False).hexdigest()
    base = os.path.join(info["instances_path"], "_base", name)
    problems = []
    if not os.path.exists(disk):
        return ["%s does not exist" % disk]
    c = qemu_img_info(disk)
    if c.get("format") != "qcow2":
        problems.append("%s is %s, not qcow2" % (disk, c.get("format")))
    if c.get("backing-filename") != base:
        problems.append("%s backs onto %s, not %s"
                        % (disk, c.get("backing-filename"), base))
    if not os.path.exists(base):
        problems.append("%s does not exist" % base)
    elif qemu_img_info(base).get("format") != "raw":
        problems.append("%s is not raw" % base)
    return problems


def wait_console(info, server, message, timeout=60):
    """True once the guest has printed `message` on its serial console."""
    log = os.path.join(info["instances_path"], server.id, "console.log")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(log, "rb") as f:
                if message.encode() in f.read():
                    return True
        except FileNotFoundError:
            pass
        time.sleep(0.5)
    return False


def domain_state(info, server):
    """virsh domstate of the server's libvirt domain ('' when none)."""
    res = subprocess.run(
        ["virsh", "-q", "-c", info["libvirt_uri"], "domstate", server.id],
        capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else ""


class Timer:
    def __init__(self):
        self.t0 = self.last = time.monotonic()

    def step(self, what):
        now = time.monotonic()
        print("[%6.1fs] +%5.1fs %s" % (now - self.t0, now - self.last, what),
              flush=True)
        self.last = now


def smoke(state_dir):
    info = load_info(state_dir)
    timer = Timer()
    conn = connect(info)
    message = "minicloud smoke %s" % uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="minicloud-smoke-") as workdir:
        image = upload_image(conn, workdir, message)
    timer.step("image %s active in Glance" % image.id)
    server = None
    try:
        server = boot(conn, info, image)
        timer.step("server %s ACTIVE on %s (%s)"
                   % (server.id, server.compute_host, server.instance_name))
        if server.compute_host != info["compute_host"]:
            raise SystemExit("server landed on %s" % server.compute_host)
        problems = disk_chain_problems(info, server, image)
        if problems:
            raise SystemExit("disk chain: " + "; ".join(problems))
        timer.step("disk is a qcow2 overlay on _base/sha1(image id) (raw)")
        if not wait_console(info, server, message):
            raise SystemExit("the guest did not print its line")
        timer.step("guest printed its line on the serial console")
        conn.compute.stop_server(server)
        conn.compute.wait_for_server(server, status="SHUTOFF",
                                     failures=["ERROR"], wait=120)
        timer.step("stopped through Nova: SHUTOFF (domain: %s)"
                   % domain_state(info, server))
        conn.compute.start_server(server)
        conn.compute.wait_for_server(server, status="ACTIVE",
                                     failures=["ERROR"], wait=120)
        timer.step("started through Nova: ACTIVE (domain: %s)"
                   % domain_state(info, server))
    finally:
        if server is not None:
            conn.compute.delete_server(server)
            conn.compute.wait_for_delete(server, wait=120)
            timer.step("server deleted")
        conn.image.delete_image(image)
    instance_dir = os.path.join(info["instances_path"], server.id)
    if os.path.exists(instance_dir) or domain_state(info, server):
        raise SystemExit("%s or its domain is still there" % instance_dir)
    timer.step("SMOKE OK: instance directory and domain gone, image deleted")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: smoke.py STATE_DIR")
    smoke(sys.argv[1])
