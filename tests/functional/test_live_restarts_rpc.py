"""The agent's live RPC endpoints survive a libvirtd restart (issue 20).

The endpoints (agent/live_rpc.py) run in this process, on the private
libvirtds of tests/functional/live_restarts.py: Nova's host ``nova``,
the KVM host ``kvm`` (by its address, as ``[live] kvm_libvirt_uri``
names it).  Nova's libvirtd is restarted in the conductor's window, B
paused and the agent waiting for finish_live_move: the finish fails and
is undone (LiveFailed, again when repeated: the migration's record), the
guest runs on in the temporary domain, its disk intact; the conductor's
rollback, live_hop_back, takes it home to the KVM host, its counter
going on.  Heavy: run under the lock,
``flock /tmp/cs2os-heavy.lock .tox/ci/bin/python -m pytest ...``.
"""

import contextlib
import re
import time
import types
import uuid

import pytest

from cs2os_agent import virt
from cs2os_agent.agent import live_rpc
from cs2os_agent.agent.live import livehost
from cs2os_agent.common import exception
from tests.functional import live_restarts as lr
from tools.testbed import live_guest
from tools.testbed import live_kvm

LOCAL = lr.LOCAL
nova, kvm, guest = lr.nova, lr.kvm, lr.guest  # the fixtures


class Agent(live_rpc.LiveEndpoints):
    """The agent's live RPC endpoints in this process: Nova's host on
    ``nova`` (B's disk swapped in), the KVM host ``kvm`` by address."""

    def __init__(self, g, kvm, nova, monkeypatch):
        self.conf = types.SimpleNamespace(
            live=types.SimpleNamespace(
                run_dir=g.file("live"), move_wait_seconds=60,
                kvm_libvirt_uri=live_kvm.uri_template(kvm),
                migrate_address=LOCAL, hop_timeout=300),
            libvirt=types.SimpleNamespace(connection_uri=nova.uri))
        self._live_moves = {}
        self.located = (types.SimpleNamespace(state=virt.SHUT_OFF,
                                              root_disk_format="qcow2"),
                        types.SimpleNamespace(disk=g.nova_disk,
                                              instance_dir=g.d))
        # prepare_live_target/swap_disk's files: not what is tested here
        monkeypatch.setattr(livehost, "require_swapped", lambda *a: None)
        monkeypatch.setattr(livehost, "nova_root_size", lambda *a: lr.SIZE)

    @contextlib.contextmanager
    def _exclusive(self, instance_uuid, migration_id):
        yield

    def _locate(self, instance_uuid):
        return self.located

    def _require_shutoff(self, info, instance_uuid):
        pass


def test_rpc_restart_between_begin_and_finish_then_hop_back(
        kvm, nova, guest, monkeypatch):
    """The conductor's window (B paused, the agent waiting for finish):
    Nova's libvirtd restarts.  finish_live_move fails, undone (LiveFailed,
    again when repeated: the record); the rollback's live_hop_back takes
    the guest, still in the temporary domain, home to the KVM host."""
    g = guest(kvm, nova)
    agent, mid = Agent(g, kvm, nova, monkeypatch), uuid.uuid4().hex
    source = {"host": LOCAL, "domain": g.tag}
    hopped = agent.live_hop(None, mid, g.b_uuid, source)
    assert hopped["temp_domain"] == livehost.temp_name(mid)
    g.one_copy(nova, g.consoles[1], gone=[(kvm, g.a_uuid)])
    assert agent.begin_live_move(None, mid, g.b_uuid, 60)["target_waiting"]
    assert lr.state(nova, g.b_uuid) == virt.PAUSED
    at = g.last()
    nova.restart()
    with pytest.raises(exception.LiveFailed, match="runs again") as exc:
        agent.finish_live_move(None, mid)
    print("\nfinish after the restart: %s" % exc.value)
    with pytest.raises(exception.LiveFailed, match="runs again"):
        agent.finish_live_move(None, mid)
    g.one_copy(nova, g.consoles[1], gone=[(nova, g.b_uuid)])
    g.disk_intact(nova, g.nova_disk, at)
    back = agent.live_hop_back(None, mid, g.b_uuid, source)
    time.sleep(0.2)  # the watch reads the temporary domain's last lines
    last = g.watch.counters(g.consoles[1])[-1][1]
    assert back["hopped_back"] is True and back["domain"] == g.tag
    assert lr.state(kvm, g.a_uuid) == virt.RUNNING
    assert lr.state(nova, g.a_uuid) == virt.GONE
    # A's console file again, reopened truncated: read whole
    deadline, after = time.monotonic() + 10, []
    while len(after) < 30 and time.monotonic() < deadline:
        time.sleep(0.1)
        with open(g.consoles[0], errors="replace") as f:
            text = f.read()
        after = [v for v in (int(c, 16) for c in re.findall(
            r"C=([0-9A-F]{8})\r?\n", text)) if v > last]
    assert after and after[0] in (last + 1, last + 2)
    lr.consecutive(after)
    assert live_guest.BANNER not in text
    assert agent.live_hop_back(None, mid, g.b_uuid, source)["reused"]
