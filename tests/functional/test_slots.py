"""Slots: limits on migrations in flight, on real SQLite, PostgreSQL and
MariaDB; several "conductors" (Database objects on the same URL, threads)
taking and freeing slots at once on PostgreSQL and MariaDB, the databases
several conductors may share (a SQLite file has one: db/sqlite_owner.py)."""

import random
import threading
import time
import types

import pytest

from cs2os_agent.conductor.flow import admission
from cs2os_agent.db import api
from cs2os_agent.db import migration

# The engines and the fixtures that build a database at head, per engine.
from tests.functional.test_database import database  # noqa: F401
from tests.functional.test_database import empty_database
from tests.functional.test_database import mariadb_server  # noqa: F401
from tests.functional.test_database import pg_cluster  # noqa: F401


@pytest.fixture(params=["postgresql", "mysql"])
def shared_database(request, workdir):
    """A database at head that several conductors may share."""
    db = empty_database(request, workdir)
    migration.upgrade(db)
    yield db
    db.engine.dispose()


def _new(db, mid, state="running"):
    db.create_migration({
        "id": mid, "source_ref": "vm-%s" % mid, "state": state,
        "step": "validate", "options": {}, "source": {}, "resources": {},
        "result": {}, "project_id": "ops"})


def test_a_full_resource_names_itself_and_an_end_frees_it(database):  # noqa: F811
    db = database
    for mid in ("m1", "m2", "m3"):
        _new(db, mid)
    limits = {"kvm:h1": 2, "pool:p1": 5}
    assert db.acquire_slots("m1", limits) is None
    assert db.acquire_slots("m1", limits) is None  # held: nothing more
    assert db.acquire_slots("m2", limits) is None
    assert db.acquire_slots("m3", limits) == "kvm:h1"
    # All or none: m3 took no pool slot while the KVM host was full.
    assert db.slot_holders("pool:p1") == ["m1", "m2"]
    assert db.slot_holders("kvm:h1") == ["m1", "m2"]
    db.update_migration("m1", {"state": "failed"})
    assert db.slot_holders("kvm:h1") == ["m2"]
    assert db.acquire_slots("m3", limits) is None
    assert sorted(db.slot_holders("kvm:h1")) == ["m2", "m3"]
    # A state that is not final keeps them.
    db.update_migration("m2", {"state": "rolling_back"})
    assert "m2" in db.slot_holders("kvm:h1")


@pytest.mark.parametrize("option,kind", [
    ("max_in_flight", "all"), ("max_per_compute_host", "compute"),
    ("max_per_kvm_host", "kvm"), ("max_per_pool", "pool")])
def test_each_kind_of_limit_binds_and_names_itself(database, option, kind):  # noqa: F811
    """Every [conductor] max_* option, set to 2 while the others allow
    plenty: the third migration on the same resources is refused and told
    the resource of that kind (the slots admission.limits asks for), and
    the end of one lets it in."""
    db = database
    options = dict.fromkeys(admission.LIMIT_NAMES, 50)
    options[option] = 2
    conf = types.SimpleNamespace(conductor=types.SimpleNamespace(**options))
    vm = {"host": {"id": "kvm-1"}, "root_volume": {"storage": {"id": "p1"}}}
    wanted = admission.limits(conf, {"target_host": "cmp-1"}, vm)
    assert len(wanted) == 4, wanted
    for mid in ("m1", "m2", "m3"):
        _new(db, mid)
    assert db.acquire_slots("m1", wanted) is None
    assert db.acquire_slots("m2", wanted) is None
    full = db.acquire_slots("m3", wanted)
    assert full is not None and full.split(":")[0] == kind, full
    assert db.slot_holders(full) == ["m1", "m2"]
    db.update_migration("m2", {"state": "succeeded"})
    assert db.acquire_slots("m3", wanted) is None
    assert db.slot_holders(full) == ["m1", "m3"]


def test_conductors_at_once_never_exceed_a_limit(shared_database):
    """Four conductors (own engines, own connections), 24 migrations on
    one KVM host with 3 slots, each holding for a random while: never
    more than 3 hold one, and every migration gets one in the end."""
    url = shared_database.engine.url.render_as_string(hide_password=False)
    conductors = [api.Database(url) for _ in range(4)]
    mids = ["mig-%02d" % n for n in range(24)]
    for mid in mids:
        _new(shared_database, mid)
    limit = 3
    peak, errors, done = [0], [], []
    lock = threading.Lock()

    def run(db, mine):
        rng = random.Random(hash(mine[0]))
        try:
            for mid in mine:
                while db.acquire_slots(mid, {"kvm:h1": limit}) is not None:
                    time.sleep(rng.uniform(0.001, 0.01))
                holders = db.slot_holders("kvm:h1")
                with lock:
                    peak[0] = max(peak[0], len(holders))
                time.sleep(rng.uniform(0.0, 0.02))
                db.update_migration(mid, {"state": "succeeded"})
                with lock:
                    done.append(mid)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(db, mids[n::4]))
               for n, db in enumerate(conductors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for db in conductors:
        db.engine.dispose()
    assert errors == []
    assert sorted(done) == mids
    # The limit was reached (the test can tell) and never passed.
    assert peak[0] == limit
    assert shared_database.slot_holders("kvm:h1") == []
