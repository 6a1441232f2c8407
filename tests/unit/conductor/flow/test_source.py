"""The CloudStack VM given back on a rollback (source.undo_source), with the
warm World's CloudStack: started again only if CloudStack says it stopped,
and only once its stop job ended.
"""

import pytest

from cs2os_agent.conductor.flow import source
from tests.unit.conductor.flow.warm_world import World
from tests.unit.conductor.flow.warm_world import stop_failed


@pytest.mark.parametrize("state, started", [("Running", False),
                                            ("Stopped", True)])
def test_undo_source_starts_the_vm_only_if_cloudstack_says_stopped(
        db, monkeypatch, state, started):
    w = World(db, monkeypatch, step="cutover",
              resources={"source_stopped": True})
    w.cloudstack.state = state
    message = source.undo_source(w.ctx)
    assert (message == "started CloudStack VM web-1 again") is started
    assert w.log == (["cs start"] if started else [])
    assert w.ctx.resources["source_stopped"] is False
    assert w.cloudstack.state == "Running"
    # Nothing left to undo on a second pass.
    assert source.undo_source(w.ctx) is None
    assert w.log.count("cs start") == int(started)


@pytest.mark.parametrize("script, started", [
    (["pending", "pending", "succeeded"], True),
    (["pending", stop_failed()], False),
])
def test_undo_source_waits_for_the_stop_job_first(db, monkeypatch, script,
                                                  started):
    w = World(db, monkeypatch, step="cutover", resources={
        "source_stopped": True, "source_stop_job": "stop-job-1"})
    w.cloudstack.add_stop_job(script)
    message = source.undo_source(w.ctx)
    assert (message == "started CloudStack VM web-1 again") is started
    assert w.cloudstack.polls == ["stop-job-1"] * len(script)
    assert w.log == ["cs wait stop-job-1"] + (["cs start"] if started
                                              else [])
    res = w.ctx.resources
    assert (res["source_stopped"], res["source_stop_job"]) == (False, None)
    assert w.cloudstack.state == "Running"
