"""What the fault tests do to the chain: crash points, a user's start, a
lost volume, and process control (only processes the suite started, by
PID)."""

import os
import signal
import time

from tests.faults import invariants
from tools.testbed import cloudstack_handlers

CRASH_ENV = "CS2OS_CRASH_AT"


def relaunch(proc, crash_at=None):
    """(Re)start a ServiceProcess of ours, armed at ``crash_at`` or not."""
    if proc.proc is not None and proc.proc.poll() is None:
        proc.stop()
    proc.crash_at = crash_at
    proc.launch(env={CRASH_ENV: crash_at} if crash_at else None)
    proc.wait_ready(proc.probe)


def ensure_plain(proc):
    if getattr(proc, "crash_at", None) or proc.proc is None or \
            proc.proc.poll() is not None:
        relaunch(proc)


def wait_death(proc, db_path, migration_id, point, timeout=300):
    """Wait for ``proc`` to SIGKILL itself at ``point``; fail if the
    migration ends (or the time runs out) first."""
    deadline = time.monotonic() + timeout
    while proc.proc.poll() is None:
        record = invariants.read_record(db_path, migration_id, events=False)
        if record and record["state"] in invariants.FINAL:
            # It may have died in the same instant.
            time.sleep(0.5)
            if proc.proc.poll() is not None:
                break
            raise AssertionError(
                "%s never reached crash point %s: migration %s ended %s at "
                "%s (%s)" % (proc.name, point, migration_id,
                             record["state"], record["step"],
                             record["error"]))
        if time.monotonic() > deadline:
            raise AssertionError("%s did not reach crash point %s in %d s"
                                 % (proc.name, point, timeout))
        time.sleep(0.1)
    assert proc.proc.returncode == -signal.SIGKILL, (
        "%s exited %s at %s, not by its own SIGKILL; see %s"
        % (proc.name, proc.proc.returncode, point, proc.log_file))


def user_start(cloud, vm):
    """A user starts the VM from CloudStack's UI: the stand-in's
    ``user_start`` (startVirtualMachine as the VM's owner, through the
    same handler and job queue, waited for; not in cloud.calls)."""
    return cloud.user_start(vm)


def start_before_commit_check(monkeypatch, cloud, vm, db_path, holder):
    """Right before cs2os's pre-commit check (the record's step is
    ``start``, not committed; the check asks CloudStack for the VM), a
    user starts the VM: deterministic, once.  ``holder["id"]``: the
    migration id, set once it is known."""
    original = cloudstack_handlers.HANDLERS["listVirtualMachines"]
    fired = []

    def hooked(cloud_, caller, params):
        ident = {k.lower(): v for k, v in params.items()}.get("id")
        if not fired and ident == vm.id and holder.get("id"):
            record = invariants.read_record(db_path, holder["id"],
                                            events=False)
            if record and record["step"] == "start" and \
                    record["state"] == "running" and \
                    not record["committed"] and \
                    not cloud.kvm.is_running(vm.instancename):
                fired.append(time.time())
                user_start(cloud_, vm)
        return original(cloud_, caller, params)

    hooked.admin_only = original.admin_only
    monkeypatch.setitem(cloudstack_handlers.HANDLERS, "listVirtualMachines",
                        hooked)
    return fired


def lose_volume_after_stop(monkeypatch, vm):
    """Primary storage loses the volume right after CloudStack stopped the
    VM, and has it back before CloudStack starts it again (the e2e
    test's fault): the copy fails, the rollback starts the VM."""
    overlay = vm.volume.overlay
    hidden = overlay + ".unavailable"
    power_off, power_on = (cloudstack_handlers.power_off,
                           cloudstack_handlers.power_on)

    def off_then_lose(c, v, forced):
        power_off(c, v, forced)
        if v is vm and os.path.exists(overlay):
            os.rename(overlay, hidden)

    def back_then_on(c, v):
        restore()
        power_on(c, v)

    def restore():
        if os.path.exists(hidden):
            os.rename(hidden, overlay)

    monkeypatch.setattr(cloudstack_handlers, "power_off", off_then_lose)
    monkeypatch.setattr(cloudstack_handlers, "power_on", back_then_on)
    return restore


def stop_source_vm(cloud, vm):
    """Free the machine after a case: the VM's domain off (the stand-in's
    own stop, not through its API)."""
    try:
        cloudstack_handlers.power_off(cloud, vm, True)
    except Exception:  # noqa: BLE001 - best effort tidy-up
        pass


def delete_servers(minicloud, migration_id):
    servers, _ports = invariants.ours_in_nova(minicloud, migration_id)
    for server_id in servers:
        minicloud.conn.compute.delete_server(server_id)
    for server_id in servers:
        try:
            minicloud.conn.compute.wait_for_delete(
                minicloud.conn.compute.get_server(server_id), wait=120)
        except Exception:  # noqa: BLE001 - gone already
            pass
