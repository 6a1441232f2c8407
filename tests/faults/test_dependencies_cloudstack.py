"""Dependencies that fail, on real processes: CloudStack's API answering
5xx or not at all at each call of the cold flow, and a CloudStack job
that fails.

The module's conductor reaches CloudStack with ``[cloudstack] timeout =
3`` (tests/faults/dependencies.py), so a held call times out.  Every case
is checked with the invariant checker (tests/faults/invariants.py) and
reported in the fault table (tests/faults/report.py).
CS2OS_FAULTS=ci (default) runs a few representative cases, full all.
"""

import time

import pytest

from tests.faults import chaos
from tests.faults import invariants
from tests.faults import report
from tests.faults.dependencies import HOLD
from tests.faults.dependencies import Migration
from tests.faults.dependencies import _events
from tests.faults.dependencies import _record_of
from tests.faults.dependencies import _selected
from tests.faults.dependencies import _start
from tests.faults.dependencies import conductor_fixture  # noqa: F401 - fixture
from tests.faults.dependencies import proxies_fixture  # noqa: F401 - fixture

# -- injecting at a given step -----------------------------------------------


def at_step(step):
    """The flow is at ``step`` (running), or rolling back (``rollback``)."""
    if step == "rollback":
        return lambda r: r["state"] == "rolling_back"
    return lambda r: r["state"] == "running" and r["step"] == step


def arm_call_failure(monkeypatch, cloud, db_path, vm, command, when,
                     failure):
    """``cloud.fail_calls[command] = failure``, armed the moment this VM's
    migration is where ``when(record)`` says and it calls ``command``:
    once.  Returns the list the firing time is appended to."""
    original = cloud._take_call_failure
    fired = []

    def take(cmd):
        if cmd == command and not fired:
            record = _record_of(db_path, vm)
            if record is not None and when(record):
                fired.append(time.time())
                with cloud.lock:
                    cloud.fail_calls[command] = failure
        return original(cmd)

    monkeypatch.setattr(cloud, "_take_call_failure", take)
    return fired


# -- the cases ---------------------------------------------------------------

# (command, where, failure kind); where: the step whose call fails.
CS_CASES = [
    ("listVirtualMachines", "validate", "5xx"),
    ("listVolumes", "validate", "5xx"),
    ("listStoragePools", "validate", "5xx"),
    ("listTemplates", "validate", "5xx"),
    ("listServiceOfferings", "validate", "5xx"),
    ("listHosts", "validate", "5xx"),
    ("listVirtualMachines", "stop_source", "5xx"),
    ("stopVirtualMachine", "stop_source", "5xx"),
    ("stopVirtualMachine", "stop_source", "timeout"),
    ("queryAsyncJobResult", "stop_source", "5xx"),
    ("queryAsyncJobResult", "stop_source", "timeout"),
    ("listVirtualMachines", "start", "5xx"),
    ("startVirtualMachine", "rollback", "5xx"),
    ("unmanageVirtualMachine", "retire_source", "5xx"),
    ("queryAsyncJobResult", "retire_source", "5xx"),
]
CS_CI = [
    ("listVolumes", "validate", "5xx"),
    ("stopVirtualMachine", "stop_source", "timeout"),
    ("unmanageVirtualMachine", "retire_source", "5xx"),
]


def _cs_id(case):
    return "%s-%s-%s" % case


def _check_outcome(final, command, committed_step=False, in_rollback=False):
    """succeeded (retried, tolerated, or after the commit with a warning)
    or failed-and-rolled-back naming the command; never anything else.
    A failure inside the rollback is named by the rollback's events and
    the rollback's next pass finishes it (check_final saw the VM run)."""
    state, error = final["state"], final["error"] or ""
    warnings = final["result"].get("warnings") or []
    if committed_step:
        assert state == "succeeded", (
            "a %s failure after the commit ended %s: %s; events %s"
            % (command, state, error, _events(final)))
        assert any(command in w["message"] for w in warnings), (
            "a %s failure after the commit left no warning naming it: %s"
            % (command, warnings))
        return "succeeded with a warning"
    if state == "succeeded":
        return "succeeded (retried or tolerated)"
    assert state == "failed" and not final["committed"], (
        "a %s failure before the commit ended %s (committed %s): %s"
        % (command, state, final["committed"], error))
    if in_rollback:
        failed_undo = [e["message"] for e in final["events"]
                       if e["step"] == "rollback" and e["kind"] == "error"]
        assert any(command in m for m in failed_undo), (
            "no rollback event names the failed %s: %s"
            % (command, _events(final)))
        assert final["result"].get("rollback_attempts", 0) >= 1
        assert not final["result"].get("rollback_incomplete")
        return "failed, rolled back on the rollback's next pass"
    assert command in error, (
        "migration failed on a %s failure but its error does not name the "
        "command: %s" % (command, error))
    return "failed, rolled back"


@pytest.mark.parametrize("case", _selected(CS_CASES, CS_CI), ids=_cs_id)
def test_cloudstack_call_fails(case, conductor, agent, conductor_api, ctxt,
                               cloud, minicloud, cloudstack_root, workdir,
                               monkeypatch):
    command, where, kind = case
    started = time.monotonic()
    vm, digest = _start(cloud, cloudstack_root, agent, conductor)
    failure = ("timeout", HOLD) if kind == "timeout" else \
        (503, "injected: management server busy")
    fired = arm_call_failure(monkeypatch, cloud, conductor.db_path, vm,
                             command, at_step(where), failure)
    if where == "rollback":
        # A rollback after the stop: the pre-commit look at the VM fails.
        trigger = arm_call_failure(monkeypatch, cloud, conductor.db_path,
                                   vm, "listVirtualMachines",
                                   at_step("start"),
                                   (503, "injected: busy before commit"))
    outcome, held, note, as_expected = "?", False, "", None
    run = Migration(conductor, minicloud, vm)
    try:
        with run.start(conductor_api, ctxt) as monitor:
            final = run.wait_final()
        outcome = final["state"]
        try:
            note = invariants.check_final(
                final, cloud, minicloud, vm, workdir, overlay_digest=digest,
                monitor=monitor)
            held = True
        except AssertionError as exc:
            note = "%s; events %s" % (exc, _events(final))
            raise AssertionError(note) from None
        if not fired:
            # The flow did not make this call here (e.g. a field it had).
            assert final["state"] == "succeeded", (final["error"],
                                                   _events(final))
            detail, as_expected = "not called by the flow", True
            print("\n[deps] %s at %s (%s): %s" % (command, where, kind,
                                                  detail))
            return
        if where == "rollback":
            assert trigger, "the rollback's trigger never fired"
        detail = _check_outcome(final, command,
                                committed_step=where == "retire_source",
                                in_rollback=where == "rollback")
        as_expected = True
        print("\n[deps] %s at %s (%s): %s; error %s; warnings %s"
              % (command, where, kind, detail, final["error"],
                 final["result"].get("warnings")))
    except AssertionError as exc:
        if as_expected is None and outcome != "?":
            as_expected = False
        note = note if not held else str(exc)
        raise
    finally:
        report.record("cs:%s@%s" % (command, where), "cold",
                      "cloudstack-" + kind, outcome,
                      time.monotonic() - started, held,
                      "" if held else note, expected=as_expected)
        if run.mid:
            chaos.delete_servers(minicloud, run.mid)
        chaos.stop_source_vm(cloud, vm)


def test_cloudstack_stop_job_fails(conductor, agent, conductor_api, ctxt,
                                   cloud, minicloud, cloudstack_root,
                                   workdir):
    """The stop job fails (530, nothing done): the migration fails before
    the commit, nothing of ours is left, the VM runs on."""
    started = time.monotonic()
    vm, digest = _start(cloud, cloudstack_root, agent, conductor)
    cloud.fail_jobs[("stopVirtualMachine", vm.id)] = "injected: agent says no"
    outcome, held, note, as_expected = "?", False, "", None
    run = Migration(conductor, minicloud, vm)
    try:
        with run.start(conductor_api, ctxt) as monitor:
            final = run.wait_final()
        outcome = final["state"]
        note = invariants.check_final(final, cloud, minicloud, vm, workdir,
                                      overlay_digest=digest, monitor=monitor)
        held = True
        as_expected = (final["state"] == "failed" and not final["committed"]
                       and final["step"] == "stop_source"
                       and "stopVirtualMachine" in (final["error"] or ""))
        assert as_expected, (final["state"], final["step"], final["error"],
                             _events(final))
        assert ("job", ("stopVirtualMachine", vm.id),
                "injected: agent says no") in cloud.injected
    except AssertionError as exc:
        note = note if held else str(exc)
        raise
    finally:
        cloud.fail_jobs.pop(("stopVirtualMachine", vm.id), None)
        report.record("cs:stopVirtualMachine job", "cold", "cloudstack-job",
                      outcome, time.monotonic() - started, held,
                      "" if held else note, expected=as_expected)
        if run.mid:
            chaos.delete_servers(minicloud, run.mid)
        chaos.stop_source_vm(cloud, vm)
