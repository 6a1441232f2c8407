"""Dependencies that fail, on real processes, on the OpenStack side:
Nova's API answering 5xx at boot, stop and start, and the agent's
instances path running out of space during the copy.

The module's conductor reaches Nova through a fault-injecting proxy
(tests/faults/dependencies.py, tests/faults/novaproxy.py).  Every case is
checked with the invariant checker (tests/faults/invariants.py) and
reported in the fault table (tests/faults/report.py).
CS2OS_FAULTS=ci (default) runs a few representative cases, full all.
"""

import os
import shutil
import subprocess
import tempfile
import time

import pytest

from tests.faults import chaos
from tests.faults import invariants
from tests.faults import novaproxy
from tests.faults import report
from tests.faults.dependencies import RUN_ID
from tests.faults.dependencies import Migration
from tests.faults.dependencies import _events
from tests.faults.dependencies import _record_of
from tests.faults.dependencies import _selected
from tests.faults.dependencies import _start
from tests.faults.dependencies import conductor_fixture  # noqa: F401 - fixture
from tests.faults.dependencies import proxies_fixture  # noqa: F401 - fixture
from tools.testbed import cloudstack_handlers

MiB = 1024 * 1024


# -- Nova -------------------------------------------------------------------

NOVA_CASES = ["boot", "stop", "start"]
NOVA_CI = ["boot", "start"]
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
    outcome, held, note, as_expected = "?", False, "", None
    run = Migration(conductor, minicloud, vm)
    try:
        with run.start(conductor_api, ctxt) as monitor:
            final = run.wait_final()
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
                conductor_api.retry_migration(ctxt, run.mid)
                final = invariants.wait_record(
                    conductor.db_path, run.mid,
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
        if run.mid:
            chaos.delete_servers(minicloud, run.mid)
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
    outcome, held, note, as_expected = "?", False, "", None
    run = Migration(conductor, minicloud, vm)
    try:
        with run.start(conductor_api, ctxt) as monitor:
            final = run.wait_final()
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
        if run.mid:
            chaos.delete_servers(minicloud, run.mid)
        chaos.stop_source_vm(cloud, vm)
