"""A record's progress as the API shows it: the current step's own work,
and where that step is in the whole migration.

The progress columns (bytes_done, bytes_total, rate_bps) hold the last
copy's figures: the template upload in ``image``, the agent's copy in
``sync``, the mirror in ``mirror``/``ready``.  ``progress_step`` says
which step they count.  Shown as the current step's while it is that step;
in a step without a copy of its own (``boot``, ``stop_source``...) the
step has no byte figures, rather than the upload's 100% of before.
"""

from cs2os_agent.common import states


def steps_of(mode):
    return {states.WARM: states.WARM_STEPS,
            states.LIVE: states.LIVE_STEPS}.get(mode, states.COLD_STEPS)


def view(record):
    """{"step", "step_number", "steps", and "bytes_done", "bytes_total",
    "rate_bps" when the current step is the one they count}."""
    step = record.get("step")
    steps = steps_of(record.get("mode"))
    body = {"step": step, "steps": len(steps),
            "step_number": (steps.index(step) + 1 if step in steps
                            else len(steps) if step == states.DONE
                            else None)}
    counted = record.get("progress_step")
    # Records from before progress_step: shown as they always were; a
    # finished flow shows what its last copy moved.
    if counted is None or counted == step or step == states.DONE:
        for name in ("bytes_done", "bytes_total", "rate_bps"):
            body[name] = record.get(name)
    return body
