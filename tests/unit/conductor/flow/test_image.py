"""The image step: the placeholder of a volume without a backing file, and
the template's guest-view digest that a warm migration's agent proves
Nova's base against.
"""

import contextlib
import hashlib
import os
import types

import pytest

from cs2os_agent import guestview
from cs2os_agent import qemu_img
from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import image as image_step
from cs2os_agent.openstack import client as os_client
from tests.unit.conductor.flow.warm_world import World

# -- a root volume without a backing file boots from one blank image -------


class FakeOpenStack:
    def __init__(self):
        self.images = []
        self.uploads = []

    def find_placeholder_image(self):
        return next(iter(self.images), None)

    def upload_image(self, name, path, disk_format, properties):
        self.uploads.append((name, os.path.getsize(path), disk_format,
                             properties))
        image = types.SimpleNamespace(id="img-%d" % len(self.images))
        self.images.append(image)
        return image


class Ctx:
    def __init__(self, openstack, spool):
        self.clients = types.SimpleNamespace(openstack=openstack)
        self.conf = types.SimpleNamespace(
            conductor=types.SimpleNamespace(image_spool_dir=spool))
        self.resources = {"template_path": None}
        self.migration = {"result": {},
                          "source": {"overlay_path": "/mnt/p/vol"}}
        self.events = []

    def resource(self, **values):
        self.resources.update(values)

    def result(self, **values):
        self.migration["result"].update(values)

    def event(self, step, message, kind="info"):
        self.events.append((step, message))


def test_made_once_then_reused(tmp_path):
    openstack = FakeOpenStack()
    first = Ctx(openstack, str(tmp_path))
    image_step.image(first)
    assert openstack.uploads == [(
        "cs2os-placeholder", image_step.PLACEHOLDER_BYTES, "raw",
        {os_client.PLACEHOLDER_KEY: "1"})]
    assert first.resources["image_id"] == "img-0"
    assert first.migration["result"]["standalone_volume"] is True
    assert "/mnt/p/vol has no backing file" in first.events[0][1]
    # The spool holds nothing afterwards.
    assert os.listdir(tmp_path) == []

    second = Ctx(openstack, str(tmp_path))
    image_step.image(second)
    assert len(openstack.uploads) == 1
    assert second.resources["image_id"] == "img-0"


# -- the template's guest-view digest, recorded with the image -------------


class Glance:
    def __init__(self, properties):
        self.image = types.SimpleNamespace(id="img-1",
                                           properties=properties)
        self.updates = []

    def get_image(self, image_id):
        return self.image

    def set_image_properties(self, image_id, props):
        self.updates.append(props)


def _image_world(db, monkeypatch, properties):
    w = World(db, monkeypatch, step="image", resources={
        "template_path": "/mnt/pool-1/tmpl-1", "base_proof": None})
    w.ctx.migration["source"] = {"root_volume": {"storage": {"id": "p"}}}
    glance = Glance(properties)
    w.nova.get_image = glance.get_image
    w.nova.set_image_properties = glance.set_image_properties
    monkeypatch.setattr(image_step, "image", lambda ctx: None)
    return w, glance


def test_image_reuses_the_recorded_guest_digest(db, monkeypatch):
    w, glance = _image_world(db, monkeypatch, {
        image_step.GUEST_DIGEST_KEY: "cd" * 32,
        image_step.GUEST_SIZE_KEY: "4096"})
    monkeypatch.setattr(image_step.transfer, "get_source", None)  # never read
    image_step.image_with_guest_digest(w.ctx)
    assert w.ctx.resources["base_proof"] == {
        "algorithm": "guest_sha256", "digest": "cd" * 32,
        "virtual_size": 4096}
    assert glance.updates == []


def test_image_hashes_the_template_once_and_records_it(db, monkeypatch,
                                                       tmp_path):
    w, glance = _image_world(db, monkeypatch, {})
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    w.ctx.conf.conductor.image_spool_dir = str(spool_dir)
    read = []

    @contextlib.contextmanager
    def get_source(source, conf):
        read.append(source)
        yield "src"

    def spool(ctx, src, path):
        with open(path, "wb") as f:
            f.write(b"qcow2")

    monkeypatch.setattr(image_step.transfer, "get_source", get_source)
    monkeypatch.setattr(image_step.sources, "source_for",
                        lambda conf, vm, path: {"path": path})
    monkeypatch.setattr(image_step, "spool", spool)
    monkeypatch.setattr(guestview, "guest_digest", lambda path, fmt, d: {
        "algorithm": "guest_sha256", "digest": "ef" * 32,
        "virtual_size": 8192, "method": "map"})
    image_step.image_with_guest_digest(w.ctx)
    assert read == [{"path": "/mnt/pool-1/tmpl-1"}]
    assert glance.updates == [{image_step.GUEST_DIGEST_KEY: "ef" * 32,
                               image_step.GUEST_SIZE_KEY: "8192"}]
    assert w.ctx.resources["base_proof"]["digest"] == "ef" * 32
    assert os.listdir(spool_dir) == []  # the spool is gone


# -- the template's guest view ---------------------------------------------


def _qcow2_like(tmp_path):
    """A file with two data runs; extents as qemu-img map would say."""
    path = tmp_path / "b.qcow2"
    with open(path, "wb") as f:
        f.write(b"H" * 4096 + b"A" * 8192 + b"B" * 4096)
    extents = [
        {"start": 0, "length": 8192, "depth": 0, "data": True,
         "zero": False, "offset": 4096},
        {"start": 8192, "length": 100000, "depth": 0, "data": False,
         "zero": True},
        {"start": 108192, "length": 4096, "depth": 0, "data": True,
         "zero": False, "offset": 12288},
        {"start": 112288, "length": 512, "depth": 0, "data": True,
         "zero": True, "offset": 0},
    ]
    view = b"A" * 8192 + bytes(100000) + b"B" * 4096 + bytes(512)
    return str(path), extents, view


def test_guest_digest_reads_data_where_map_says(tmp_path, monkeypatch):
    path, extents, view = _qcow2_like(tmp_path)
    monkeypatch.setattr(qemu_img, "info", lambda p, f: {
        "virtual-size": len(view), "format-specific": {"data": {}}})
    monkeypatch.setattr(qemu_img, "map", lambda p, f: extents)
    got = guestview.guest_digest(path, "qcow2", str(tmp_path))
    assert got == {"algorithm": "guest_sha256",
                   "digest": hashlib.sha256(view).hexdigest(),
                   "virtual_size": len(view), "method": "map"}


def test_guest_digest_converts_what_map_cannot_place(tmp_path, monkeypatch):
    path, extents, view = _qcow2_like(tmp_path)
    del extents[2]["offset"]  # a compressed cluster
    monkeypatch.setattr(qemu_img, "info", lambda p, f: {
        "virtual-size": len(view)})
    monkeypatch.setattr(qemu_img, "map", lambda p, f: extents)
    ran = []

    def convert(args, **kwargs):
        ran.append(args[:5])
        with open(args[-1], "wb") as f:
            f.write(view[:-512])  # qemu-img may stop before a zero tail

    monkeypatch.setattr(qemu_img, "_execute", convert)
    got = guestview.guest_digest(path, "qcow2", str(tmp_path))
    assert ran == [["convert", "-f", "qcow2", "-O", "raw"]]
    assert got["digest"] == hashlib.sha256(view).hexdigest()
    assert got["method"] == "convert"
    assert sorted(os.listdir(tmp_path)) == ["b.qcow2"]


@pytest.mark.parametrize("info, words", [
    ({"encrypted": True}, "encrypted"),
    ({"format-specific": {"data": {"data-file": "/etc/shadow"}}},
     "external data file"),
    ({"backing-filename": "/x"}, "backing file"),
])
def test_guest_digest_refuses_images_whose_offsets_lie(tmp_path, monkeypatch,
                                                       info, words):
    monkeypatch.setattr(qemu_img, "info",
                        lambda p, f: dict(info, **{"virtual-size": 1}))
    with pytest.raises(exception.Invalid) as err:
        guestview.guest_digest(str(tmp_path / "x"), "qcow2", str(tmp_path))
    assert words in str(err.value)
