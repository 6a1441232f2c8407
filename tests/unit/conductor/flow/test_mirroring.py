"""The warm flow's mirror steps, one at a time, with the warm World: validate
(the running domain, its root disk, its QEMU's user, no foreign job) and
mirror (a fresh start forgets an earlier attempt's cutover).  The steps in
the whole flow: test_warm*.py.
"""

import pytest

from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import mirroring
from cs2os_agent.conductor.flow import prepare
from tests.unit.conductor.flow.warm_world import PAUSED
from tests.unit.conductor.flow.warm_world import RUNNING
from tests.unit.conductor.flow.warm_world import World


def _validated(db, monkeypatch, vm_state="Running", dom_state=RUNNING,
               foreign_job=False):
    w = World(db, monkeypatch, step="validate", resources={})
    vm = {"id": "vm-1", "name": "web-1", "state": vm_state,
          "instancename": "i-2-7-VM",
          "host": {"ipaddress": "10.0.0.5"},
          "root_volume": {"path": "vol-1", "storage": {"id": "pool-1"}}}

    def cold_validate(ctx):
        ctx.save(source=vm)

    monkeypatch.setattr(prepare, "validate", cold_validate)
    w.dom.state_ = dom_state
    if foreign_job:
        w.dom.job, w.dom.export = {"cur": 1, "end": 9}, "someone-else"
    mirroring.validate(w.ctx)
    return w.ctx.resources


def test_validate_records_the_source_domain(db, monkeypatch):
    res = _validated(db, monkeypatch)
    assert (res["kvm_host"], res["source_domain"], res["source_disk"],
            res["socket_owner"]) == ("10.0.0.5", "i-2-7-VM", "vda",
                                     "64055:64055")


@pytest.mark.parametrize("kwargs, words", [
    ({"vm_state": "Stopped"}, "use mode cold"),
    ({"dom_state": PAUSED}, "is paused"),
    ({"foreign_job": True}, "another block job runs on disk vda"),
])
def test_validate_refuses(db, monkeypatch, kwargs, words):
    with pytest.raises(exception.Invalid) as err:
        _validated(db, monkeypatch, **kwargs)
    assert words in str(err.value)


def test_the_mirror_step_forgets_an_earlier_attempts_cutover(db,
                                                             monkeypatch):
    w = World(db, monkeypatch, method="force", resources={
        "cutover_started": 1000.0, "cutover_method": "shutdown",
        "cutover_done": True,
        "source_down_at": 1000.0, "source_stop_job": "stop-job-1"})
    mirroring.mirror(w.ctx)
    res = w.ctx.resources
    assert (res["cutover_started"], res["cutover_method"],
            res["cutover_done"],
            res["source_down_at"], res["source_stop_job"]) == (
        None, None, False, None, None)
