"""The data disk plan for a disk on CloudStack RBD primary storage."""

from cs2os_agent.conductor.flow import datadisks
from tests.unit.conductor.flow.test_datadisks import POOL2
from tests.unit.conductor.flow.test_datadisks import GiB
from tests.unit.conductor.flow.test_datadisks import ctx_for
from tests.unit.conductor.flow.test_datadisks import data_disk
from tests.unit.conductor.flow.test_datadisks import fake  # noqa: F401
from tests.unit.conductor.flow.test_datadisks import files  # noqa: F401
from tests.unit.conductor.flow.test_datadisks import vm


def test_a_disk_on_rbd_is_one_raw_image_never_opened_here(
        db, fake, files):  # noqa: F811
    ctx = ctx_for(db, target_project_id="proj-1")
    disk = data_disk(1, size=2 * GiB + 1, path="vol-uuid-1", storage={
        "id": POOL2, "name": "ceph-1", "type": "RBD", "path": "cloudstack",
        "ipaddress": "10.0.0.5"})
    (planned,) = datadisks.plan(ctx, vm(disk))
    assert planned["chain"] == [{"transport": "rbd", "pool": "cloudstack",
                                 "image": "vol-uuid-1",
                                 "monitors": "10.0.0.5"}]
    assert (planned["format"], planned["virtual_size"],
            planned["size_gib"]) == ("raw", 2 * GiB + 1, 3)
    assert files.read == []


def test_a_warm_migration_plans_a_disk_on_rbd_as_a_cold_one(
        db, fake, files):  # noqa: F811
    """Warm no longer refuses it (the preflight plans the same way): the
    mirror reads it from the running domain (warmdisks.py)."""
    storage = {"id": POOL2, "name": "ceph-1", "type": "RBD",
               "path": "cloudstack", "ipaddress": "10.0.0.5"}
    disk = data_disk(1, size=GiB, path="vol-uuid-1", storage=storage)
    (warm,) = datadisks.plan(ctx_for(db, mode="warm"), vm(disk))
    assert warm["chain"] == [{"transport": "rbd", "pool": "cloudstack",
                              "image": "vol-uuid-1",
                              "monitors": "10.0.0.5"}]
    assert (warm["format"], warm["virtual_size"], warm["size_gib"]) == (
        "raw", GiB, 1)
    assert files.read == []
