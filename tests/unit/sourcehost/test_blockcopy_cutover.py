"""The block copy's cutover (sourcehost/blockcopy.py) waits for nothing left
to copy: a guest write that raced the suspend is copied first.
"""

from cs2os_agent.sourcehost import blockcopy
from tests.fakes import libvirt as fakes
from tests.unit.conductor.flow.warm_world import EXPORT
from tests.unit.conductor.flow.warm_world import PAUSED


def test_cutover_ends_the_job_only_once_everything_is_copied():
    dom = fakes.FakeDomain()
    dom.job, dom.ready, dom.export = {"cur": 100, "end": 100}, True, EXPORT
    job = blockcopy.BlockCopy(dom)
    looks = []

    def write_in_flight(d):
        # A write that raced the suspend: queued for the background copy.
        if d.state_ == PAUSED and PAUSED not in looks:
            d.job = {"cur": 100, "end": 164}
            d.step = 32
        looks.append(d.state_)

    dom.on_info = write_in_flight
    job.cutover()
    assert dom.calls == ["suspend", "blockJobAbort(0)"]
    # It looked until cur reached end (100 -> 132 -> 164), then ended it.
    assert looks.count(PAUSED) == 3
