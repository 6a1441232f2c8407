"""VolumeClient (Cinder volumes, Nova attachments) against a fake
openstacksdk connection: what it asks, what it makes of the answers, and
how it waits.  The real thing is tests/e2e/test_data_disks.py.
"""

import types

import pytest
from openstack import exceptions as sdk_exc

from cs2os_agent.common import exception
from cs2os_agent.openstack import volumes as os_volumes

PROJECT = "p-owner"
SERVICE_USER = "u-cs2os"
MIGRATION = "0b7f3e0c-0000-4000-8000-000000000001"


class Volume:
    """A volume whose ``status`` is the next of ``statuses`` at each
    get_volume (the last one stays)."""

    def __init__(self, vid, statuses=("available",), metadata=None,
                 user_id=SERVICE_USER, project_id=PROJECT):
        self.id = vid
        self.statuses = list(statuses)
        self.status = self.statuses[0]
        self.metadata = metadata
        self.user_id, self.project_id = user_id, project_id

    def read(self):
        self.status = self.statuses.pop(0) if len(self.statuses) > 1 \
            else self.statuses[0]
        return self


def ours(vid, cloudstack_id, migration_id=MIGRATION, **kwargs):
    return Volume(vid, metadata={
        os_volumes.MIGRATION_KEY: migration_id,
        os_volumes.CLOUDSTACK_VOLUME_KEY: cloudstack_id}, **kwargs)


class BlockStorage:
    def __init__(self):
        self.limits = types.SimpleNamespace(
            max_total_volume_gigabytes=1000, total_gigabytes_used=0,
            max_total_volumes=10, total_volumes_used=0)
        self.volumes_ = {}
        self.types = {"ssd"}
        self.calls = []
        self.fail = None  # an exception every call raises
        self.gone_after_delete = True

    def _call(self, *call):
        self.calls.append(call)
        if self.fail is not None:
            raise self.fail

    def get_limits(self):
        self._call("get_limits")
        return types.SimpleNamespace(absolute=self.limits)

    def find_type(self, ref, ignore_missing=False):
        self._call("find_type", ref, ignore_missing)
        return types.SimpleNamespace(name=ref) if ref in self.types else None

    def volumes(self, **query):
        self._call("volumes", query)
        return list(self.volumes_.values())

    def create_volume(self, **attrs):
        self._call("create_volume", attrs)
        volume = Volume("v-new", ("creating",), attrs["metadata"])
        self.volumes_[volume.id] = volume
        return volume

    def get_volume(self, volume_id):
        self._call("get_volume", volume_id)
        if volume_id not in self.volumes_:
            raise sdk_exc.NotFoundException("no volume %s" % volume_id)
        return self.volumes_[volume_id].read()

    def delete_volume(self, volume_id):
        self._call("delete_volume", volume_id)
        if volume_id not in self.volumes_:
            raise sdk_exc.NotFoundException("no volume %s" % volume_id)
        if self.gone_after_delete:
            del self.volumes_[volume_id]


class Compute:
    def __init__(self, block_storage):
        self.block_storage = block_storage
        self.attachments = []
        self.calls = []

    def volume_attachments(self, server_id):
        self.calls.append(("volume_attachments", server_id))
        return [types.SimpleNamespace(volume_id=v) for v in self.attachments]

    def create_volume_attachment(self, server_id, **attrs):
        self.calls.append(("create_volume_attachment", server_id, attrs))
        self.attachments.append(attrs["volume_id"])
        self.block_storage.volumes_[attrs["volume_id"]].statuses = [
            "attaching", "in-use"]


class Conn:
    current_project_id = PROJECT
    current_user_id = SERVICE_USER

    def __init__(self):
        self.block_storage = BlockStorage()
        self.compute = Compute(self.block_storage)


@pytest.fixture
def conn():
    return Conn()


def client(conn, wait_timeout=600):
    return os_volumes.VolumeClient(conn, wait_timeout=wait_timeout,
                                   poll_interval=0)


# -- headroom, types --------------------------------------------------------


@pytest.mark.parametrize("limits,expected", [
    ((1000, 300, 10, 4), (700, 6)),
    ((1000, None, 10, None), (1000, 10)),
    ((-1, 300, -1, 4), (None, None)),
    ((None, 300, None, 4), (None, None)),
    ((100, 130, 10, 12), (0, 0)),  # over quota already
    ((100, 100, -1, 0), (0, None)),
])
def test_headroom(conn, limits, expected):
    conn.block_storage.limits = types.SimpleNamespace(
        max_total_volume_gigabytes=limits[0], total_gigabytes_used=limits[1],
        max_total_volumes=limits[2], total_volumes_used=limits[3])
    assert client(conn).headroom() == expected


def test_headroom_unreadable_is_an_openstack_error(conn):
    conn.block_storage.fail = sdk_exc.HttpException("503 busy")
    with pytest.raises(exception.OpenStackError,
                       match="read the project's Cinder limits failed"):
        client(conn).headroom()


def test_volume_type_exists(conn):
    assert client(conn).volume_type_exists("ssd") is True
    assert client(conn).volume_type_exists("gold") is False
    assert conn.block_storage.calls == [("find_type", "ssd", True),
                                        ("find_type", "gold", True)]


# -- find, create ------------------------------------------------------------


def test_find_volumes_keeps_this_migrations_by_cloudstack_id(conn):
    a, b = ours("v1", "cs-1"), ours("v2", "cs-2")
    conn.block_storage.volumes_ = {
        "v0": Volume("v0", metadata=None),
        "v1": a,
        "vx": ours("vx", "cs-1", migration_id="another-migration"),
        "v2": b,
        "vy": Volume("vy", metadata={"other": "x"}),
    }
    assert client(conn).find_volumes(MIGRATION) == {"cs-1": a, "cs-2": b}
    assert conn.block_storage.calls == [("volumes", {"details": True})]


def test_find_volumes_adopts_only_volumes_cs2os_made_itself(conn):
    # As find_server (openstack/client.py) and find_port do: metadata
    # proves nothing, any member of the project can set it on a volume of
    # its own, and a volume found here gets the data disk written over it
    # and is deleted by a rollback.
    mine = ours("v1", "cs-1")
    conn.block_storage.volumes_ = {
        "v0": ours("v0", "cs-2", user_id="u-tenant"),
        "v1": mine,
    }
    assert client(conn).find_volumes(MIGRATION) == {"cs-1": mine}


def test_create_volume_carries_the_metadata_that_finds_it_again(conn):
    volume = client(conn).create_volume("web-1-data-1", 4, "ssd", MIGRATION,
                                        "cs-1", "desc")
    assert conn.block_storage.calls == [("create_volume", {
        "name": "web-1-data-1", "size": 4, "description": "desc",
        "volume_type": "ssd", "metadata": {
            os_volumes.MIGRATION_KEY: MIGRATION,
            os_volumes.CLOUDSTACK_VOLUME_KEY: "cs-1"}})]
    assert client(conn).find_volumes(MIGRATION) == {"cs-1": volume}


def test_create_volume_without_type_leaves_cinders_default(conn):
    client(conn).create_volume("n", 1, None, MIGRATION, "cs-1", "d")
    assert "volume_type" not in conn.block_storage.calls[0][1]


def test_create_volume_failure_is_an_openstack_error(conn):
    conn.block_storage.fail = sdk_exc.HttpException("413 over quota")
    with pytest.raises(exception.OpenStackError,
                       match="create volume web-1-data-1 failed"):
        client(conn).create_volume("web-1-data-1", 1, None, MIGRATION,
                                   "cs-1", "d")


# -- wait ------------------------------------------------------------------


def test_wait_volume_polls_until_the_status(conn):
    conn.block_storage.volumes_["v1"] = Volume(
        "v1", ("creating", "creating", "available"))
    assert client(conn).wait_volume("v1", "available").id == "v1"
    assert conn.block_storage.calls == [("get_volume", "v1")] * 3


@pytest.mark.parametrize("status", ["error", "error_extending"])
def test_wait_volume_fails_on_an_error_state(conn, status):
    conn.block_storage.volumes_["v1"] = Volume("v1", ("creating", status))
    with pytest.raises(exception.OpenStackError) as info:
        client(conn).wait_volume("v1", "available")
    assert str(info.value) == ("OpenStack: volume v1 to become available "
                               "failed: it went to %s" % status)


def test_wait_volume_fails_at_the_deadline(conn):
    conn.block_storage.volumes_["v1"] = Volume("v1", ("creating",))
    with pytest.raises(exception.OpenStackError) as info:
        client(conn, wait_timeout=0).wait_volume("v1", "available")
    assert str(info.value).endswith("still creating after 0 s")


def test_wait_volume_fails_when_the_volume_is_gone(conn):
    with pytest.raises(exception.OpenStackError, match="it is gone"):
        client(conn).wait_volume("v1", "available")


def test_get_volume_of_a_gone_volume_is_none(conn):
    assert client(conn).get_volume("nope") is None


# -- attach ------------------------------------------------------------------


def test_attach_goes_through_nova_and_waits_for_in_use(conn):
    conn.block_storage.volumes_["v1"] = Volume("v1")
    volume = client(conn).attach("srv", "v1")
    assert volume.status == "in-use"
    assert conn.compute.calls == [
        ("create_volume_attachment", "srv", {"volume_id": "v1"})]
    # attaching, then in-use: polled until there.
    assert conn.block_storage.calls == [("get_volume", "v1")] * 2


def test_attach_refused_by_nova_is_an_openstack_error(conn):
    conn.block_storage.volumes_["v1"] = Volume("v1")

    def refuse(server_id, **attrs):
        raise sdk_exc.BadRequestException("volume is in-use")

    conn.compute.create_volume_attachment = refuse
    with pytest.raises(exception.OpenStackError,
                       match="attach volume v1 to server srv failed"):
        client(conn).attach("srv", "v1")


def test_attached_volumes_in_nova_order(conn):
    conn.compute.attachments = ["v2", "v1"]
    assert client(conn).attached_volumes("srv") == ["v2", "v1"]
    assert conn.compute.calls == [("volume_attachments", "srv")]


# -- delete ------------------------------------------------------------------


def test_delete_of_a_gone_volume_is_false_and_deletes_nothing(conn):
    assert client(conn).delete_volume("v1") is False
    assert [c[0] for c in conn.block_storage.calls] == ["get_volume"]


@pytest.mark.parametrize("status", ["available", "error"])
def test_delete_of_an_available_volume_waits_until_gone(conn, status):
    conn.block_storage.volumes_["v1"] = Volume("v1", (status,))
    assert client(conn).delete_volume("v1") is True
    assert conn.block_storage.calls == [
        ("get_volume", "v1"), ("delete_volume", "v1"), ("get_volume", "v1")]
    assert conn.block_storage.volumes_ == {}


def test_delete_of_a_detaching_volume_waits_for_available_first(conn):
    conn.block_storage.volumes_["v1"] = Volume(
        "v1", ("detaching", "detaching", "available"))
    assert client(conn).delete_volume("v1") is True
    names = [c[0] for c in conn.block_storage.calls]
    assert names.index("delete_volume") > 1
    assert conn.block_storage.volumes_ == {}


def test_delete_that_never_finishes_fails_at_the_deadline(conn):
    conn.block_storage.volumes_["v1"] = Volume("v1")
    conn.block_storage.gone_after_delete = False
    with pytest.raises(exception.OpenStackError) as info:
        client(conn, wait_timeout=0).delete_volume("v1")
    assert str(info.value) == ("OpenStack: delete volume v1 failed: still "
                               "there after 0 s")
