"""The minicloud's volumes: Cinder on a real Ceph, attached through Nova.

A project member (the demo project, no admin) creates a volume (the
default type, RBD on the minicloud's single-node Ceph) and attaches it to
its server through Nova: the volume goes in-use and the libvirt domain gets
an rbd network disk that QEMU's librbd opens as client.cinder with the
libvirt secret (no host block device).  Bytes written through the running
domain are in the RBD image, read directly as client.cinder; detaching
(from the stopped server) and deleting the volume leave nothing in the
pool.  What issue 16's data disks stand on.
"""

import json
import time
import uuid

from tools.testbed.minicloud import smoke

PATTERN = 0x5a
LENGTH = 3 << 20  # 3 MiB at 1 MiB: across RBD's 4 MiB objects' boundary
OFFSET = 1 << 20


def boot_as_member(conn, image, name):
    """A server of the member's own project (no host: that is admin-only);
    the minicloud has one compute host."""
    flavor = next(f for f in conn.compute.flavors() if f.name == "m1.tiny")
    server = conn.compute.create_server(name=name, image_id=image.id,
                                        flavor_id=flavor.id, networks="none")
    return conn.compute.wait_for_server(server, status="ACTIVE",
                                        failures=["ERROR"], wait=180)


def orphan_images(minicloud, info):
    """RBD images in Cinder's pool that belong to no Cinder volume."""
    volumes = minicloud.conn.block_storage.volumes(all_projects=True)
    known = {smoke.rbd_image(info, v) for v in volumes}
    return sorted(set(smoke.rbd_images(info)) - known)


def test_member_volume_attached_through_nova_on_rbd(minicloud,
                                                    minicloud_volumes,
                                                    tmp_path):
    info = minicloud_volumes
    admin = minicloud.conn
    demo = minicloud.connect(info["demo_cloud"])
    run = uuid.uuid4().hex[:8]
    timings = {}
    image = server = volume = None
    try:
        t = time.monotonic()
        image = smoke.upload_image(demo, str(tmp_path), "cs2os e2e %s" % run,
                                   name="cs2os-e2e-vol-%s" % run)
        server = boot_as_member(demo, image, "cs2os-e2e-vol-%s" % run)
        timings["boot"] = time.monotonic() - t

        t = time.monotonic()
        volume = demo.block_storage.create_volume(
            size=1, name="cs2os-e2e-vol-%s" % run)
        volume = smoke.wait_volume(demo, volume, "available")
        timings["create"] = time.monotonic() - t
        assert volume.volume_type == info["cinder"]["volume_type"]
        assert volume.size == 1
        seen = admin.block_storage.get_volume(volume.id)
        assert seen.project_id == demo.current_project_id
        assert seen.host.startswith(info["cinder"]["volume_host"])
        assert smoke.rbd_image(info, volume) in smoke.rbd_images(info)

        t = time.monotonic()
        demo.compute.create_volume_attachment(server, volume)
        volume = smoke.wait_volume(demo, volume, "in-use")
        timings["attach"] = time.monotonic() - t
        assert [a["server_id"] for a in volume.attachments] == [server.id]
        assert [a.volume_id for a in demo.compute.volume_attachments(
            server)] == [volume.id]
        assert smoke.rbd_disk_problems(info, server, volume) == []

        # The guest's view: its block device, written through the domain;
        # RBD's view: the image, read as client.cinder.
        assert smoke.rbd_read(info, volume, OFFSET + LENGTH) == bytes(
            OFFSET + LENGTH)
        smoke.guest_write(info, server, volume, PATTERN, LENGTH, OFFSET)
        data = smoke.rbd_read(info, volume, 2 * OFFSET + LENGTH)
        assert data[:OFFSET] == bytes(OFFSET)
        assert data[OFFSET:OFFSET + LENGTH] == bytes([PATTERN]) * LENGTH
        assert data[OFFSET + LENGTH:] == bytes(OFFSET)

        t = time.monotonic()
        demo.compute.stop_server(server)
        demo.compute.wait_for_server(server, status="SHUTOFF",
                                     failures=["ERROR"], wait=120)
        demo.compute.delete_volume_attachment(server, volume)
        volume = smoke.wait_volume(demo, volume, "available")
        timings["detach"] = time.monotonic() - t
        assert volume.attachments == []
        assert smoke.domain_rbd_disks(info, server) == []

        t = time.monotonic()
        smoke.delete_volume(demo, volume)
        deleted, volume = volume, None
        timings["delete"] = time.monotonic() - t
        assert smoke.rbd_image(info, deleted) not in smoke.rbd_images(info)
        assert orphan_images(minicloud, info) == []
    finally:
        if server is not None:
            demo.compute.delete_server(server)
            demo.compute.wait_for_delete(server, wait=120)
        if volume is not None:
            volume = admin.block_storage.get_volume(volume.id)
            if volume.status == "in-use":
                admin.block_storage.wait_for_status(
                    volume, status="available", interval=0.5, wait=60)
            smoke.delete_volume(admin, volume)
        if image is not None:
            demo.image.delete_image(image, ignore_missing=True)
        demo.close()
    print("minicloud volume timings (s): %s"
          % json.dumps({k: round(v, 1) for k, v in timings.items()}))
