"""Cinder volumes on the minicloud's Ceph: what smoke.py and the e2e tests
use to see a volume in RBD and in a running domain (loaded by path, as
smoke.py is: tools/minicloud is no package)."""

import json
import os
import subprocess
import tempfile
import xml.etree.ElementTree as ET


def rbd_image(info, volume):
    """The RBD image of a Cinder volume (in pool info["ceph"]["pool"])."""
    return info["cinder"]["image_name_template"] % volume.id


def rbd_uri(info, volume):
    """QEMU's name for the volume's image, read as client.cinder."""
    ceph = info["ceph"]
    return "rbd:%s/%s:conf=%s:id=%s" % (ceph["pool"], rbd_image(info, volume),
                                        ceph["conf"], ceph["user"])


def rbd_images(info):
    """The images in Cinder's pool (`rbd ls` as client.cinder)."""
    ceph = info["ceph"]
    out = subprocess.run(
        ["rbd", "-c", ceph["conf"], "--id", ceph["user"], "ls", ceph["pool"]],
        check=True, capture_output=True, text=True).stdout
    return out.split()


def rbd_read(info, volume, length):
    """The first `length` bytes of the volume, read from RBD directly
    (QEMU's rbd driver as client.cinder, not through any domain)."""
    block = 1 << 20
    with tempfile.TemporaryDirectory(prefix="minicloud-rbd-") as workdir:
        out = os.path.join(workdir, "head.raw")
        subprocess.run(
            ["qemu-img", "dd", "-f", "raw", "-O", "raw", "bs=%d" % block,
             "count=%d" % -(-length // block), "if=" + rbd_uri(info, volume),
             "of=" + out], check=True, capture_output=True)
        with open(out, "rb") as f:
            return f.read(length)


def domain_rbd_disks(info, server):
    """The rbd network disks of the server's libvirt domain, in the domain
    XML's order: dicts of name (pool/image), hosts, user, secret_uuid,
    secret_type, target, serial."""
    xml = subprocess.run(
        ["virsh", "-q", "-c", info["libvirt_uri"], "dumpxml", server.id],
        check=True, capture_output=True, text=True).stdout
    domain = ET.fromstring(xml)  # noqa: S314 - libvirt's own XML
    disks = []
    for disk in domain.findall("./devices/disk[@type='network']"):
        source = disk.find("source")
        if source is None or source.get("protocol") != "rbd":
            continue
        auth = disk.find("auth")
        secret = auth.find("secret") if auth is not None else None
        disks.append({
            "name": source.get("name"),
            "hosts": ["%s:%s" % (h.get("name"), h.get("port"))
                      for h in source.findall("host")],
            "user": auth.get("username") if auth is not None else None,
            "secret_type": secret.get("type") if secret is not None else None,
            "secret_uuid": secret.get("uuid") if secret is not None else None,
            "target": disk.find("target").get("dev"),
            "serial": disk.findtext("serial"),
        })
    return disks


def _monitor(info, server, command, hmp=False):
    args = ["virsh", "-q", "-c", info["libvirt_uri"], "qemu-monitor-command",
            server.id]
    if hmp:
        args.append("--hmp")
    return subprocess.run(args + [command], check=True, capture_output=True,
                          text=True).stdout


def guest_device(info, server, volume):
    """The QEMU device (qdev path) through which the running domain's guest
    sees the volume, found by its RBD image in QEMU's query-block."""
    pool, image = info["ceph"]["pool"], rbd_image(info, volume)
    blocks = json.loads(_monitor(info, server,
                                 '{"execute": "query-block"}'))["return"]
    for block in blocks:
        filename = block.get("inserted", {}).get("image", {}).get(
            "filename", "")
        if filename.startswith("json:"):
            spec = json.loads(filename[len("json:"):]).get("file", {})
            found = (spec.get("driver") == "rbd" and spec.get("pool") == pool
                     and spec.get("image") == image)
        else:
            found = filename.startswith("rbd:%s/%s" % (pool, image))
        if found:
            return block["qdev"]
    raise LookupError("no block device of domain %s reads %s/%s"
                      % (server.id, pool, image))


def guest_write(info, server, volume, pattern, length, offset=0):
    """Write `length` bytes of byte `pattern` at `offset` of the volume
    through the running domain (qemu-io on the guest's own block device,
    as a guest write goes), then flush them to RBD."""
    device = guest_device(info, server, volume)
    for command in ("write -P 0x%02x %d %d" % (pattern, offset, length),
                    "flush"):
        out = _monitor(info, server,
                       'qemu-io -d %s "%s"' % (device, command), hmp=True)
        if out.strip():  # qemu-io prints its report on QEMU's stdout
            raise RuntimeError("qemu-io %r on %s: %s"
                               % (command, device, out.strip()))


def wait_volume(conn, volume, status, timeout=120):
    """The volume once its status is `status`."""
    return conn.block_storage.wait_for_status(
        volume, status=status, failures=["error", "error_deleting",
                                         "error_extending"],
        interval=0.5, wait=timeout)


def delete_volume(conn, volume, timeout=120):
    conn.block_storage.delete_volume(volume)
    conn.block_storage.wait_for_delete(volume, interval=0.5, wait=timeout)


def rbd_disk_problems(info, server, volume):
    """What is wrong with the server's domain XML for an attached volume:
    one rbd network disk of the volume's image, logging in as client.cinder
    with the cloud's libvirt secret."""
    ceph = info["ceph"]
    name = "%s/%s" % (ceph["pool"], rbd_image(info, volume))
    disks = [d for d in domain_rbd_disks(info, server) if d["name"] == name]
    if len(disks) != 1:
        return ["%d rbd disks of %s in the domain: %s"
                % (len(disks), name, domain_rbd_disks(info, server))]
    disk, problems = disks[0], []
    if disk["user"] != ceph["user"]:
        problems.append("auth username %r" % disk["user"])
    if (disk["secret_type"], disk["secret_uuid"]) != (
            "ceph", ceph["libvirt_secret_uuid"]):
        problems.append("secret %s %s" % (disk["secret_type"],
                                          disk["secret_uuid"]))
    if ceph["mon_host"] not in disk["hosts"]:
        problems.append("hosts %s" % disk["hosts"])
    if disk["serial"] != volume.id:
        problems.append("serial %r" % disk["serial"])
    return problems
