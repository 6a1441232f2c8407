"""Dependencies that fail, on real processes: CloudStack's API answering
5xx or not at all at each call of the cold flow, a CloudStack job that
fails, Nova's API answering 5xx at boot, stop and start, and the agent's
instances path running out of space during the copy.

One conductor of this module's own: ``[cloudstack] timeout = 3`` (so a
held call times out), and ``[openstack] auth_url`` pointing at a proxy in
front of Keystone that rewrites the service catalog so that Nova is
reached through a fault-injecting proxy (tests/faults/novaproxy.py); the
minicloud and every other client see the real services.  Every case is
checked with the invariant checker (tests/faults/invariants.py) and
reported in the fault table (tests/faults/report.py).
CS2OS_FAULTS=ci (default) runs a few representative cases, full all.
"""

import collections
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time

import pytest

from tests.e2e.conftest import delete_migrated_servers
from tests.e2e.conftest import new_vm
from tests.faults import cases
from tests.faults import chaos
from tests.faults import invariants
from tests.faults import novaproxy
from tests.faults import report
from tools.testbed import cloudstack_handlers
from tools.testbed import harness as ft
from tools.testbed import images
from tools.testbed import warm_chain
from tools.testbed.minicloud import admin_auth

RUN_ID = ft.RUN_ID
MiB = 1024 * 1024
CS_TIMEOUT = 3  # [cloudstack] timeout of this module's conductor
HOLD = 10  # a "timeout" failure holds the call this long (> CS_TIMEOUT)
KEYSTONE = "http://127.0.0.1:5000"
NOVA = "http://127.0.0.1:8774"


# -- this module's conductor, behind the proxies -----------------------------


@pytest.fixture(scope="module")
def proxies():
    nova = novaproxy.FaultProxy(NOVA).start()
    keystone = novaproxy.FaultProxy(KEYSTONE)
    keystone.start()
    keystone.rewrite = [(NOVA.encode(), nova.url.encode()),
                        (KEYSTONE.encode(), keystone.url.encode())]
    yield collections.namedtuple("Proxies", "nova keystone")(nova, keystone)
    nova.stop()
    keystone.stop()


def _set_option(conf_file, section, name, value):
    with open(conf_file) as f:
        lines = f.read().splitlines()
    out, in_section, done = [], False, False
    for line in lines:
        if line.startswith("["):
            if in_section and not done:
                out.append("%s = %s" % (name, value))
                done = True
            in_section = line.strip() == "[%s]" % section
        elif in_section and line.split("=")[0].strip() == name:
            line, done = "%s = %s" % (name, value), True
        out.append(line)
    if in_section and not done:
        out.append("%s = %s" % (name, value))
    with open(conf_file, "w") as f:
        f.write("\n".join(out) + "\n")


@pytest.fixture(scope="module")
def conductor(workdir, services, cloud, minicloud, agent, conductor_api,
              cloudstack_root, kvm_sshd, proxies):
    auth = admin_auth(minicloud)
    auth["auth_url"] = auth["auth_url"].replace(KEYSTONE,
                                                proxies.keystone.url)
    assert auth["auth_url"] != admin_auth(minicloud)["auth_url"], auth
    name = "%s-faults-test_dependencies" % RUN_ID
    proc = warm_chain.make_conductor(
        workdir, name, ft.TRANSPORT_URL, services["exchange"], cloud, auth,
        cloudstack_root, kvm_sshd)
    _set_option(proc.conf_file, "cloudstack", "timeout", CS_TIMEOUT)
    proc.db_path = os.path.join(workdir, "e2e-%s.sqlite" % name)
    proc.probe = lambda: conductor_api.list_migrations(
        _admin(), limit=1)
    proc.manage("db", "sync")
    proc.launch()
    proc.wait_ready(proc.probe, timeout=120)
    yield proc
    proc.stop()
    delete_migrated_servers(minicloud)


def _admin():
    from cs2os_agent.common import context as cs2os_context

    return cs2os_context.get_admin_context()


# -- injecting at a given step -----------------------------------------------


def _record_of(db_path, vm):
    """The newest migration of ``vm`` (by the name it was requested by)."""
    try:
        conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True,
                               timeout=5)
        try:
            row = conn.execute(
                "SELECT id FROM migrations WHERE source_ref = ? ORDER BY "
                "created_at DESC LIMIT 1", (vm.name,)).fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return None
    return row and invariants.read_record(db_path, row[0], events=False)


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
NOVA_CASES = ["boot", "stop", "start"]
NOVA_CI = ["boot", "start"]


def _selected(all_cases, ci):
    return all_cases if cases.MODE == "full" else \
        [c for c in all_cases if c in ci]


def _cs_id(case):
    return "%s-%s-%s" % case


def _start(cloud, cloudstack_root, agent, conductor, **volume_args):
    chaos.ensure_plain(agent)
    chaos.ensure_plain(conductor)
    vm = new_vm(cloud, cloudstack_root, **volume_args)
    return vm, images.sha256(vm.volume.overlay)


def _events(final):
    return [(e["step"], e["kind"], e["message"][:160])
            for e in final["events"] if e["message"] != "done"]


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
    outcome, held, note, as_expected, mid = "?", False, "", None, None
    try:
        created = conductor_api.create_migration(
            ctxt, {"source": vm.name, "host": minicloud.compute_host})
        mid = created["id"]
        monitor = invariants.LiveCopyMonitor(
            conductor.db_path, mid, vm.instancename,
            minicloud.instances_path)
        with monitor:
            final = invariants.wait_final(conductor.db_path, mid, 600)
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
        if mid:
            chaos.delete_servers(minicloud, mid)
        chaos.stop_source_vm(cloud, vm)


def test_cloudstack_stop_job_fails(conductor, agent, conductor_api, ctxt,
                                   cloud, minicloud, cloudstack_root,
                                   workdir):
    """The stop job fails (530, nothing done): the migration fails before
    the commit, nothing of ours is left, the VM runs on."""
    started = time.monotonic()
    vm, digest = _start(cloud, cloudstack_root, agent, conductor)
    cloud.fail_jobs[("stopVirtualMachine", vm.id)] = "injected: agent says no"
    outcome, held, note, as_expected, mid = "?", False, "", None, None
    try:
        created = conductor_api.create_migration(
            ctxt, {"source": vm.name, "host": minicloud.compute_host})
        mid = created["id"]
        monitor = invariants.LiveCopyMonitor(
            conductor.db_path, mid, vm.instancename,
            minicloud.instances_path)
        with monitor:
            final = invariants.wait_final(conductor.db_path, mid, 600)
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
        if mid:
            chaos.delete_servers(minicloud, mid)
        chaos.stop_source_vm(cloud, vm)


# -- Nova -------------------------------------------------------------------

NOVA_RULES = {
    "boot": dict(method="POST", path=r"/servers$"),
    "stop": dict(method="POST", path=r"/servers/[^/]+/action$",
                 body="os-stop"),
    "start": dict(method="POST", path=r"/servers/[^/]+/action$",
                  body="os-start"),
}


@pytest.mark.parametrize("call", _selected(NOVA_CASES, NOVA_CI))
def test_nova_api_fails(call, conductor, agent, conductor_api, ctxt, cloud,
                        minicloud, cloudstack_root, workdir, proxies):
    """Nova answers 500 once at boot (POST /servers), at the boot step's
    stop (os-stop) or at the commit's start (os-start): before the commit
    it fails and rolls back; at the start it fails committed (no
    rollback), and a retry resumes at start and succeeds."""
    started = time.monotonic()
    vm, digest = _start(cloud, cloudstack_root, agent, conductor)
    rule = proxies.nova.add(novaproxy.Rule(
        status=500 if call != "stop" else 503, name="nova %s" % call,
        **NOVA_RULES[call]))
    outcome, held, note, as_expected, mid = "?", False, "", None, None
    try:
        created = conductor_api.create_migration(
            ctxt, {"source": vm.name, "host": minicloud.compute_host})
        mid = created["id"]
        monitor = invariants.LiveCopyMonitor(
            conductor.db_path, mid, vm.instancename,
            minicloud.instances_path)
        with monitor:
            final = invariants.wait_final(conductor.db_path, mid, 600)
            outcome = final["state"]
            assert rule.fired, "the proxy never saw the %s request" % call
            if call == "start":
                note = invariants.check_final(final, cloud, minicloud, vm,
                                              workdir, overlay_digest=digest)
                assert final["state"] == "failed" and final["committed"], (
                    final["state"], final["committed"], final["error"])
                assert final["step"] == "start", final["step"]
                assert "committed" in final["error"], final["error"]
                assert not final["result"].get("rolled_back"), final["result"]
                first_error = final["error"]
                conductor_api.retry_migration(ctxt, mid)
                final = invariants.wait_record(
                    conductor.db_path, mid,
                    lambda r: r["state"] in invariants.FINAL
                    and r["finished_at"] != final["finished_at"],
                    "a final state after the retry", 600)
                outcome = final["state"]
        note = invariants.check_final(final, cloud, minicloud, vm, workdir,
                                      overlay_digest=digest, monitor=monitor)
        held = True
        if call == "start":
            as_expected = final["state"] == "succeeded"
            assert as_expected, (final["error"], _events(final))
            print("\n[deps] nova start 500: first %s; after retry %s"
                  % (first_error, final["state"]))
        else:
            as_expected = (final["state"] == "failed"
                           and not final["committed"]
                           and final["step"] == "boot")
            assert as_expected, (final["state"], final["step"],
                                 final["error"], _events(final))
            print("\n[deps] nova %s 5xx: %s" % (call, final["error"]))
    except AssertionError as exc:
        note = note if held else str(exc)
        raise
    finally:
        proxies.nova.remove(rule)
        report.record("nova:%s%s" % (call, " (failed, then retry)"
                                     if call == "start" else ""),
                      "cold", "nova-5xx", outcome,
                      time.monotonic() - started, held,
                      "" if held else note, expected=as_expected)
        if mid:
            chaos.delete_servers(minicloud, mid)
        chaos.stop_source_vm(cloud, vm)


# -- the agent's disk full ---------------------------------------------------


class InstanceTmpfs:
    """A small tmpfs mounted over one server's instance directory, holding
    copies of its files (owner, mode kept); unmounted by path, once."""

    def __init__(self, directory, size_mib):
        self.directory = directory
        self.size_mib = size_mib
        self.mounted = False
        self.unmounted_at = None

    def mount(self):
        st = os.stat(self.directory)
        keep = tempfile.mkdtemp(prefix="cs2os-faults-tmpfs-")
        try:
            subprocess.run(["cp", "-a", self.directory + "/.", keep],
                           check=True)
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o",
                 "size=%dm,mode=%o,uid=%d,gid=%d"
                 % (self.size_mib, st.st_mode & 0o7777, st.st_uid,
                    st.st_gid),
                 "cs2os-faults-%s" % RUN_ID, self.directory], check=True)
            self.mounted = True
            subprocess.run(["cp", "-a", keep + "/.", self.directory],
                           check=True)
        finally:
            shutil.rmtree(keep, ignore_errors=True)

    def unmount(self):
        if self.mounted:
            subprocess.run(["umount", self.directory], check=True)
            self.mounted = False
            self.unmounted_at = time.time()


def test_instances_path_full_during_copy(conductor, agent, conductor_api,
                                         ctxt, cloud, minicloud,
                                         cloudstack_root, workdir, proxies,
                                         monkeypatch):
    """After boot (the server SHUTOFF), while CloudStack is asked to stop
    the VM, an 8 MiB tmpfs replaces the server's instance directory; the
    overlay holds 32 MiB of data, so the agent's staging runs out of
    space: the migration fails in sync naming it, rolls back (the tmpfs is
    unmounted right before Nova's delete, held at the proxy), invariants
    held."""
    started = time.monotonic()
    vm, digest = _start(cloud, cloudstack_root, agent, conductor,
                        writes=((0xA1, 1 * MiB, 32 * MiB),))
    holder = {}
    original = cloudstack_handlers.HANDLERS["stopVirtualMachine"]

    def hooked(cloud_, caller, params):
        ident = {k.lower(): v for k, v in params.items()}.get("id")
        if ident == vm.id and "tmpfs" not in holder:
            record = _record_of(conductor.db_path, vm)
            server_id = record and record["resources"].get("server_id")
            if server_id:
                holder["tmpfs"] = InstanceTmpfs(os.path.join(
                    minicloud.instances_path, server_id), 8)
                holder["tmpfs"].mount()
        return original(cloud_, caller, params)

    hooked.admin_only = original.admin_only
    monkeypatch.setitem(cloudstack_handlers.HANDLERS, "stopVirtualMachine",
                        hooked)

    def unmount_first(method, path, body):
        if "tmpfs" in holder:
            holder["tmpfs"].unmount()

    rule = proxies.nova.add(novaproxy.Rule(
        "DELETE", r"/servers/[^/]+$", hook=unmount_first,
        name="unmount before delete"))
    outcome, held, note, as_expected, mid = "?", False, "", None, None
    try:
        created = conductor_api.create_migration(
            ctxt, {"source": vm.name, "host": minicloud.compute_host})
        mid = created["id"]
        monitor = invariants.LiveCopyMonitor(
            conductor.db_path, mid, vm.instancename,
            minicloud.instances_path)
        with monitor:
            final = invariants.wait_final(conductor.db_path, mid, 600)
        outcome = final["state"]
        assert "tmpfs" in holder, "the tmpfs was never mounted"
        note = invariants.check_final(final, cloud, minicloud, vm, workdir,
                                      overlay_digest=digest, monitor=monitor)
        held = True
        error = final["error"] or ""
        as_expected = (final["state"] == "failed" and not final["committed"]
                       and final["step"] == "sync"
                       and ("No space" in error or "ENOSPC" in error
                            or "Errno 28" in error))
        assert as_expected, (final["state"], final["step"], error,
                             _events(final))
        # Unmounted by the proxy hook, before Nova was asked to delete it;
        # Nova's delete worked (check_final: no server left).
        assert rule.fired and holder["tmpfs"].unmounted_at, (
            rule.fired, holder["tmpfs"].unmounted_at)
        print("\n[deps] instances path full: %s; rolled back %s"
              % (error, final["result"].get("rolled_back")))
    except AssertionError as exc:
        note = note if held else str(exc)
        raise
    finally:
        proxies.nova.remove(rule)
        if "tmpfs" in holder:
            holder["tmpfs"].unmount()
        report.record("agent:instances path full", "cold", "enospc",
                      outcome, time.monotonic() - started, held,
                      "" if held else note, expected=as_expected)
        if mid:
            chaos.delete_servers(minicloud, mid)
        chaos.stop_source_vm(cloud, vm)
