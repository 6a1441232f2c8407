"""migrations.bytes_moved: the bytes of every copy the record's result
names (db/moved.py), written by db/api.py with each write of result, on
the real SQLite database."""

import pytest

from cs2os_agent.db import moved

MiB = 2 ** 20

# A cold migration with two data disks, as the flow records it
# (image.py, disk.py, datadisks.py); the other keys count for nothing.
COLD = {
    "image_reused": False, "template_bytes_moved": 48 * MiB,
    "sync": {"bytes_copied": 3 * MiB, "layer_bytes_copied": MiB,
             "staged_path": "/x/disk.cs2os-staged",
             "source": {"transport": "ssh"}},
    "data_disks": [{"name": "DATA-0", "bytes_copied": 5 * MiB},
                   {"name": "DATA-1", "bytes_copied": 2 * MiB + 7}],
    "nics": [{"mac": "fa:16:3e:00:00:01"}], "warnings": [],
}
COLD_TOTAL = 58 * MiB + 7

# A warm one (mirroring.py, warmdisks.py): the mirror moved the bytes;
# its sync is the agent staging them on the target's side.
WARM = {
    "template_bytes_moved": 0, "image_reused": True,
    "mirror": {"bytes": 40 * MiB, "seconds": 2.5, "rate_bps": 1},
    "sync": {"bytes_copied": 39 * MiB,
             "source": {"transport": "mirror", "export": "nbd://x"}},
    "data_disks": [{"name": "DATA-0", "mirrored": True,
                    "virtual_size": 2 ** 30}],
}


@pytest.mark.parametrize("result, expected", [
    (COLD, COLD_TOTAL),
    (WARM, 40 * MiB),
    ({}, 0),
    (None, 0),
    # Failed at the second data disk: the template and the root moved.
    ({"template_bytes_moved": 10, "sync": {"bytes_copied": 20},
      "data_disks": [{"bytes_copied": 30}],
      "rollback_of": {"state": "failed", "error": "x"}}, 60),
    # An agent's answer without the figure: nothing known to have moved.
    ({"sync": {"bytes_copied": None}, "data_disks": [{"name": "d"}],
      "mirror": {"bytes": None}}, 0),
])
def test_bytes_moved_sums_every_copy_once(result, expected):
    assert moved.bytes_moved(result) == expected


def _create(db, mid="m", result=None):
    return db.create_migration({
        "id": mid, "source_ref": "vm", "state": "running", "step": "sync",
        "options": {}, "source": {}, "resources": {},
        "result": result or {}})


def test_every_write_of_result_writes_bytes_moved(db):
    assert _create(db)["bytes_moved"] == 0
    db.update_migration("m", {"result": {"template_bytes_moved": 100}})
    assert db.get_migration("m")["bytes_moved"] == 100
    # A write without result leaves it as it is.
    db.update_migration("m", {"bytes_done": 5, "step": "boot"})
    assert db.get_migration("m")["bytes_moved"] == 100
    db.update_migration("m", {"result": COLD})
    assert db.get_migration("m")["bytes_moved"] == COLD_TOTAL
    assert _create(db, "w", WARM)["bytes_moved"] == 40 * MiB


def test_a_step_run_again_does_not_count_its_bytes_twice(db):
    """The sync step re-run after a crash (or a takeover) writes its
    answer again: the figure replaces the first, it is not added."""
    _create(db, result={"template_bytes_moved": 100})
    for _attempt in range(3):
        record = db.get_migration("m")
        db.update_migration("m", {"result": dict(
            record["result"], sync={"bytes_copied": 1000, "reused": True})})
        assert db.get_migration("m")["bytes_moved"] == 1100
    # Each data disk as it is done: the list so far, written whole.
    disks = []
    for size in (7, 11):
        disks.append({"bytes_copied": size})
        record = db.get_migration("m")
        db.update_migration("m", {"result": dict(record["result"],
                                                 data_disks=list(disks))})
    db.update_migration("m", {"result": dict(
        db.get_migration("m")["result"], data_disks=list(disks))})
    assert db.get_migration("m")["bytes_moved"] == 1118
