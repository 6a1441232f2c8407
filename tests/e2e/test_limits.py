"""Limits on migrations in flight: with [conductor] max_per_kvm_host = 1,
two VMs of one CloudStack KVM host requested at once migrate one after
the other; the second says what it waits for, and nothing of it exists
in Nova before the first ends."""

import datetime

import pytest

from tests.e2e.conftest import delete_migrated_servers
from tests.e2e.conftest import module_conductor
from tests.e2e.conftest import new_vm
from tools.testbed.harness import wait_for
from tools.testbed.harness import wait_state


@pytest.fixture(scope="module")
def conductor(request, workdir, services, cloud, minicloud, agent,
              conductor_api, cloudstack_root):
    proc = module_conductor(request, workdir, services, cloud, minicloud,
                            conductor_api, cloudstack_root,
                            conductor={"max_per_kvm_host": 1})
    yield proc
    proc.stop()
    delete_migrated_servers(minicloud)


def _when(event):
    return datetime.datetime.fromisoformat(event["created_at"])


def test_one_kvm_host_one_migration_at_a_time(
        conductor, conductor_api, ctxt, cloud, minicloud, cloudstack_root):
    first_vm = new_vm(cloud, cloudstack_root)
    second_vm = new_vm(cloud, cloudstack_root)
    first = conductor_api.create_migration(
        ctxt, {"source": first_vm.name, "host": minicloud.compute_host})
    # The first holds the KVM host's one slot before the second asks.
    wait_for(lambda: conductor_api.get_migration(ctxt, first["id"])[
        "step"] != "validate", 120, "the first migration past validate",
        interval=0.2)
    second = conductor_api.create_migration(
        ctxt, {"source": second_vm.name, "host": minicloud.compute_host})
    done = [wait_state(conductor_api, ctxt, m["id"], ("succeeded", "failed"))
            for m in (first, second)]
    assert [d["state"] for d in done] == ["succeeded", "succeeded"], [
        d["error"] for d in done]
    events = done[1]["events"]
    waiting = [e for e in events if e["message"].startswith(
        "waiting for a slot: kvm:")]
    assert len(waiting) == 1, events
    assert waiting[0]["message"].endswith(
        "is at its limit of 1 migrations in flight (%s)" % first["id"])
    going_on = [e for e in events
                if e["message"].startswith("a slot is free")]
    assert len(going_on) == 1
    # The second went on only once the first had ended, and made nothing
    # before that: its first step after validate came later still.
    first_end = datetime.datetime.fromisoformat(done[0]["finished_at"])
    assert _when(going_on[0]) >= first_end
    later = [e for e in events if e["step"] not in ("validate",)]
    assert later and min(_when(e) for e in later) >= first_end
