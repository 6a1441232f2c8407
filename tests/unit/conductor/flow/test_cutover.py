"""The cutover step's choice of method; the cutovers themselves, in the whole
flow: test_warm.py (force) and test_warm_shutdown_cutover.py (shutdown).
"""

from cs2os_agent.conductor.flow import cutover as cutover_step
from tests.unit.conductor.flow.warm_world import MID
from tests.unit.conductor.flow.warm_world import World


def test_cutover_method_reads_the_action_then_the_request(db, monkeypatch):
    w = World(db, monkeypatch)
    assert cutover_step.cutover_method(w.ctx) == "shutdown"

    def options(**values):
        db.update_migration(MID, {"options": dict(
            {"networks": {}, "cutover": "auto"}, **values)})
        return cutover_step.cutover_method(w.ctx)

    assert options(cutover_method="force") == "force"
    assert options(cutover_method="force",
                   cutover_requested={"by": "ops"}) == "force"
    assert options(cutover_method="force", cutover_requested={
        "by": "ops", "method": "shutdown"}) == "shutdown"
    assert options(cutover_requested={"by": "ops",
                                      "method": "force"}) == "force"
