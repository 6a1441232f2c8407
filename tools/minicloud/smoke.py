"""The minicloud's smoke test, through openstacksdk as the conductor works.

    smoke.py STATE_DIR

Uploads a tiny bootable image (make_image.py) to Glance, boots it with no
network on the compute host (microversions 2.37 and 2.74), waits ACTIVE,
checks Nova's disk layout the cs2os method relies on (<instances_path>/<uuid>/
disk = qcow2 overlay on the raw cache _base/<sha1(image id)>) and that the
guest ran from it (its line on the serial console), stops it through Nova
(SHUTOFF), starts it, deletes it.  Then the network: creates a network, a
subnet 10.0.0.0/24 and a port with MAC fa:16:3e:12:34:56 and fixed IP
10.0.0.50, boots a server on that port on the compute host, waits ACTIVE
(Nova waits for the OVS agent's network-vif-plugged), checks the libvirt
domain has that MAC and the port is ACTIVE and bound to the compute host,
then deletes all it made.  Then a volume: creates a 1 GiB Cinder volume
(default type, RBD on the cloud's Ceph), boots a server, attaches the
volume through Nova, checks it in-use and in the domain XML as an rbd
network disk (client.cinder, the libvirt secret), writes a pattern into it
through the running domain (qemu-io on the guest's block device) and reads
it back from RBD directly (qemu-img as client.cinder), stops the server,
detaches the volume (a stopped guest: the test guests ignore ACPI, so a
live detach would wait for an unplug that never comes), deletes it and
checks its RBD image is gone.  Prints the time of each step.
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
import xml.etree.ElementTree as ET

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


def boot(conn, info, image, flavor="m1.tiny", name=None, timeout=180,
         networks="none"):
    """A server on the minicloud's compute host, ACTIVE.  networks: "none"
    (microversion >= 2.37), or Nova's list, e.g. [{"port": port.id}]."""
    flavors = [f for f in conn.compute.flavors() if f.name == flavor]
    if not flavors:
        raise LookupError("no flavor %r in the minicloud" % flavor)
    server = conn.compute.create_server(
        name=name or "minicloud-smoke-%s" % uuid.uuid4().hex[:8],
        image_id=image.id,
        flavor_id=flavors[0].id,
        networks=networks,
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


def domain_macs(info, server):
    """The MAC addresses of the server's libvirt domain's interfaces, in
    the domain XML's order."""
    xml = subprocess.run(
        ["virsh", "-q", "-c", info["libvirt_uri"], "dumpxml", server.id],
        check=True, capture_output=True, text=True).stdout
    # libvirt's own XML of a domain of ours
    domain = ET.fromstring(xml)  # noqa: S314
    return [mac.get("address")
            for mac in domain.findall("./devices/interface/mac")]


# -- volumes: Cinder on the cloud's Ceph (helpers in volumes.py) -----------

volumes = _load("volumes")
# The names the e2e tests and smoke_volume use, as before the split.
rbd_image, rbd_images, rbd_read = (volumes.rbd_image, volumes.rbd_images,
                                   volumes.rbd_read)
domain_rbd_disks, guest_write = volumes.domain_rbd_disks, volumes.guest_write
guest_device = volumes.guest_device
wait_volume, delete_volume = volumes.wait_volume, volumes.delete_volume
rbd_disk_problems = volumes.rbd_disk_problems


def link_exists(name):
    """Is there a network interface of that name in this namespace?"""
    return os.path.exists(os.path.join("/sys/class/net", name))


def tap_name(port):
    """The tap device Nova's libvirt driver makes for a Neutron port."""
    return ("tap" + port.id)[:14]


def wait_port(conn, port, status, timeout=60):
    """The port once its status is `status` (the OVS agent's work)."""
    deadline = time.monotonic() + timeout
    while True:
        port = conn.network.get_port(port.id)
        if port.status == status or time.monotonic() > deadline:
            return port
        time.sleep(0.5)


class Timer:
    def __init__(self):
        self.t0 = self.last = time.monotonic()

    def step(self, what):
        now = time.monotonic()
        print("[%6.1fs] +%5.1fs %s" % (now - self.t0, now - self.last, what),
              flush=True)
        self.last = now


SMOKE_MAC = "fa:16:3e:12:34:56"
SMOKE_CIDR = "10.0.0.0/24"
SMOKE_IP = "10.0.0.50"


def smoke_port(conn, info, image, timer):
    """Boot a server on a port of chosen MAC and IP; check; delete all."""
    run = uuid.uuid4().hex[:8]
    network = subnet = port = server = None
    try:
        network = conn.network.create_network(name="minicloud-smoke-%s" % run)
        subnet = conn.network.create_subnet(
            name="minicloud-smoke-%s" % run, network_id=network.id,
            ip_version=4, cidr=SMOKE_CIDR)
        port = conn.network.create_port(
            name="minicloud-smoke-%s" % run, network_id=network.id,
            mac_address=SMOKE_MAC,
            fixed_ips=[{"subnet_id": subnet.id, "ip_address": SMOKE_IP}])
        timer.step("network %s (%s), subnet %s, port %s (%s, %s): %s"
                   % (network.id, network.provider_network_type, SMOKE_CIDR,
                      port.id, port.mac_address, SMOKE_IP, port.status))
        server = boot(conn, info, image, networks=[{"port": port.id}],
                      name="minicloud-smoke-port-%s" % run)
        timer.step("server %s ACTIVE on %s (%s) on the port"
                   % (server.id, server.compute_host, server.instance_name))
        macs = domain_macs(info, server)
        if macs != [SMOKE_MAC]:
            raise SystemExit("domain %s has MACs %s, not [%s]"
                             % (server.instance_name, macs, SMOKE_MAC))
        port = wait_port(conn, port, "ACTIVE")
        problems = []
        if port.status != "ACTIVE":
            problems.append("status %s" % port.status)
        if port.binding_host_id != info["compute_host"]:
            problems.append("bound to %r" % port.binding_host_id)
        if port.device_id != server.id:
            problems.append("device %r" % port.device_id)
        if [ip["ip_address"] for ip in port.fixed_ips] != [SMOKE_IP]:
            problems.append("fixed IPs %s" % port.fixed_ips)
        if problems:
            raise SystemExit("port %s: %s" % (port.id, ", ".join(problems)))
        addresses = [a["addr"] for net in server.addresses.values()
                     for a in net]
        if addresses != [SMOKE_IP]:
            raise SystemExit("server addresses %s" % server.addresses)
        timer.step("domain has MAC %s; port ACTIVE, bound to %s (%s, vif %s)"
                   % (SMOKE_MAC, port.binding_host_id, SMOKE_IP,
                      port.binding_vif_type))
    finally:
        if server is not None:
            conn.compute.delete_server(server)
            conn.compute.wait_for_delete(server, wait=120)
            timer.step("server deleted")
        if port is not None:
            conn.network.delete_port(port)
        if subnet is not None:
            conn.network.delete_subnet(subnet)
        if network is not None:
            conn.network.delete_network(network)
    if link_exists(tap_name(port)):
        raise SystemExit("tap device %s is still there" % tap_name(port))
    timer.step("port, subnet and network deleted; tap %s gone"
               % tap_name(port))


PATTERN = 0xab
PATTERN_LENGTH = 1 << 20


def smoke_volume(conn, info, image, timer):
    """A volume through Cinder and Nova onto Ceph, and back; all deleted."""
    run = uuid.uuid4().hex[:8]
    server = volume = None
    try:
        volume = conn.block_storage.create_volume(
            size=1, name="minicloud-smoke-%s" % run)
        volume = wait_volume(conn, volume, "available")
        if volume.volume_type != info["cinder"]["volume_type"]:
            raise SystemExit("volume of type %r" % volume.volume_type)
        if rbd_image(info, volume) not in rbd_images(info):
            raise SystemExit("no RBD image %s" % rbd_image(info, volume))
        timer.step("volume %s available (1 GiB, type %s, host %s), RBD image "
                   "%s/%s" % (volume.id, volume.volume_type, volume.host,
                              info["ceph"]["pool"], rbd_image(info, volume)))
        server = boot(conn, info, image, name="minicloud-smoke-vol-%s" % run)
        timer.step("server %s ACTIVE" % server.id)
        conn.compute.create_volume_attachment(server, volume)
        volume = wait_volume(conn, volume, "in-use")
        attached = [a["server_id"] for a in volume.attachments]
        if attached != [server.id]:
            raise SystemExit("volume attached to %s" % attached)
        problems = rbd_disk_problems(info, server, volume)
        if problems:
            raise SystemExit("domain disk: " + "; ".join(problems))
        timer.step("attached through Nova: in-use; the domain has an rbd "
                   "network disk (user %s, secret %s)"
                   % (info["ceph"]["user"],
                      info["ceph"]["libvirt_secret_uuid"]))
        if rbd_read(info, volume, 2 * PATTERN_LENGTH) != bytes(
                2 * PATTERN_LENGTH):
            raise SystemExit("a new volume is not all zeros")
        guest_write(info, server, volume, PATTERN, PATTERN_LENGTH)
        data = rbd_read(info, volume, 2 * PATTERN_LENGTH)
        expected = (bytes([PATTERN]) * PATTERN_LENGTH
                    + bytes(PATTERN_LENGTH))
        if data != expected:
            raise SystemExit("RBD image does not hold what the guest wrote")
        timer.step("1 MiB of 0x%02x written through the domain (%s), read "
                   "back from RBD as client.%s"
                   % (PATTERN, guest_device(info, server, volume),
                      info["ceph"]["user"]))
        conn.compute.stop_server(server)
        conn.compute.wait_for_server(server, status="SHUTOFF",
                                     failures=["ERROR"], wait=120)
        conn.compute.delete_volume_attachment(server, volume)
        volume = wait_volume(conn, volume, "available")
        if domain_rbd_disks(info, server):
            raise SystemExit("the domain still has rbd disks: %s"
                             % domain_rbd_disks(info, server))
        timer.step("server stopped, volume detached: available, not in the "
                   "domain")
        delete_volume(conn, volume)
        deleted, volume = volume, None
        if rbd_image(info, deleted) in rbd_images(info):
            raise SystemExit("RBD image %s is still there"
                             % rbd_image(info, deleted))
        timer.step("volume deleted, RBD image gone")
    finally:
        if server is not None:
            conn.compute.delete_server(server)
            conn.compute.wait_for_delete(server, wait=120)
            timer.step("server deleted")
        if volume is not None:
            volume = conn.block_storage.get_volume(volume)
            if volume.status == "in-use":
                conn.block_storage.wait_for_status(
                    volume, status="available", interval=0.5, wait=60)
            delete_volume(conn, volume)


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
        conn.compute.delete_server(server)
        conn.compute.wait_for_delete(server, wait=120)
        deleted, server = server, None
        timer.step("server deleted")
        instance_dir = os.path.join(info["instances_path"], deleted.id)
        if os.path.exists(instance_dir) or domain_state(info, deleted):
            raise SystemExit("%s or its domain is still there" % instance_dir)
        timer.step("instance directory and domain gone")
        smoke_port(conn, info, image, timer)
        smoke_volume(conn, info, image, timer)
    finally:
        if server is not None:
            conn.compute.delete_server(server)
            conn.compute.wait_for_delete(server, wait=120)
            timer.step("server deleted")
        conn.image.delete_image(image)
    timer.step("SMOKE OK: all deleted")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: smoke.py STATE_DIR")
    smoke(sys.argv[1])
