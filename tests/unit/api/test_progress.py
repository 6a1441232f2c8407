"""The current step's own progress, as the API shows it."""

import pytest

from cs2os_agent.api import progress


def record(step, progress_step, mode="cold"):
    return {"step": step, "mode": mode, "progress_step": progress_step,
            "bytes_done": 5, "bytes_total": 10, "rate_bps": 2}


@pytest.mark.parametrize("rec, wanted", [
    # The copy of this very step: its bytes.
    (record("sync", "sync"), {"step": "sync", "steps": 12, "step_number": 7,
                              "bytes_done": 5, "bytes_total": 10,
                              "rate_bps": 2}),
    # The boot after the template upload: no bytes of its own.
    (record("boot", "image"), {"step": "boot", "steps": 12,
                               "step_number": 4}),
    (record("cutover", "ready", "warm"), {"step": "cutover", "steps": 13,
                                          "step_number": 7}),
    # A record from before progress_step: shown as it always was.
    (record("swap", None), {"step": "swap", "steps": 12, "step_number": 9,
                            "bytes_done": 5, "bytes_total": 10,
                            "rate_bps": 2}),
    # Done: what the last copy moved.
    (record("done", "sync"), {"step": "done", "steps": 12,
                              "step_number": 12, "bytes_done": 5,
                              "bytes_total": 10, "rate_bps": 2}),
])
def test_the_step_shows_only_its_own_bytes(rec, wanted):
    assert progress.view(rec) == wanted
