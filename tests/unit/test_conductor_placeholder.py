"""A root volume without a backing file boots from one blank image."""

import os
import types

from cs2os_agent.conductor.flow import image
from cs2os_agent.openstack import client as os_client


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
    image.image(first)
    assert openstack.uploads == [(
        "cs2os-placeholder", image.PLACEHOLDER_BYTES, "raw",
        {os_client.PLACEHOLDER_KEY: "1"})]
    assert first.resources["image_id"] == "img-0"
    assert first.migration["result"]["standalone_volume"] is True
    assert "/mnt/p/vol has no backing file" in first.events[0][1]
    # The spool holds nothing afterwards.
    assert os.listdir(tmp_path) == []

    second = Ctx(openstack, str(tmp_path))
    image.image(second)
    assert len(openstack.uploads) == 1
    assert second.resources["image_id"] == "img-0"
