"""The agent's side of one warm migration: T, its daemon and its tunnel.

T is a fresh qcow2 overlay on the instance's base D, next to Nova's disk as
``disk.cs2os-mirror`` (never Nova's disk C itself: C holds the first
boot's writes).  Its virtual size is the source disk's: QEMU's mirror
refuses a target of another size; ``finish`` grows it to the instance
disk's size afterwards, as the cold path does.

The daemon's sockets, pid file and logs live in a private directory per
migration (``[mirror] run_dir``/<hash of the migration id>, mode 0700).  A
``state.json`` there names the processes (PID and start time), so that an
agent restarted mid-mirror can still stop exactly them (``abandon``).
"""

import hashlib
import json
import os
import shutil
import signal
import time

from oslo_log import log as logging

from cs2os_agent import qemu_img
from cs2os_agent.agent import layout
from cs2os_agent.agent.mirror import qsd
from cs2os_agent.agent.mirror import tunnel
from cs2os_agent.agent.mirror import writebehind
from cs2os_agent.common import fileutils
from cs2os_agent.common import mirror_errors
from cs2os_agent.common import nbd

LOG = logging.getLogger(__name__)

STATE_FILE = "state.json"
TUNNEL_LOG = "tunnel.log"


def run_dir_for(root, migration_id):
    """A short per-migration directory: socket paths stay < 108 bytes."""
    digest = hashlib.sha256(str(migration_id).encode()).hexdigest()[:16]
    return os.path.join(root, digest)


def _start_time(pid):
    """The kernel's start time of ``pid`` (clock ticks since boot), or None.

    With the PID it names one process for good: a PID reused after a
    restart has another start time.
    """
    try:
        with open("/proc/%d/stat" % pid) as f:
            # Field 22; the command name (field 2) may hold blanks, so
            # count from its closing parenthesis.
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class MirrorTarget:
    """T exported over NBD, reachable from the source host (or locally)."""

    def __init__(self, migration_id, instance_dir, base, base_format,
                 virtual_size, run_root, endpoint=None, ssh_options=None,
                 remote_socket_dir="/tmp", socket_owner=None,
                 qsd_binary=qsd.BINARY, instance_uuid=None,
                 tunnel_ready_timeout=None, run_dir=None, export=None):
        # run_dir, export: a data disk's target (volumemirror.py) has its
        # own, next to the root's; it has no T (instance_dir None).
        self.migration_id = migration_id
        self.instance_uuid = instance_uuid
        self.instance_dir = instance_dir
        self.base = base
        self.base_format = base_format
        self.virtual_size = int(virtual_size)
        self.run_dir = run_dir or run_dir_for(run_root, migration_id)
        # One name for T, shared with the agent's cleanup (layout.ours()).
        self.target_path = (layout.InstanceFiles(instance_dir).mirror
                            if instance_dir else None)
        self.export = export or nbd.export_name(migration_id)
        self.endpoint = endpoint
        self.ssh_options = ssh_options
        self.remote_socket_dir = remote_socket_dir
        self.socket_owner = tunnel.valid_owner(socket_owner)
        self.tunnel_ready_timeout = tunnel_ready_timeout
        self.qsd = (qsd.StorageDaemon(self.run_dir, self.target_path,
                                      base, self.export, base_format,
                                      binary=qsd_binary)
                    if instance_dir else None)
        self.tunnel = None
        self.write_behind = writebehind.PeriodicWriteBehind(self.target_path)
        self.state = "new"
        self.error = None
        self.prepared_at = None

    # -- life cycle ---------------------------------------------------------

    def prepare(self):
        """Create T, start the daemon and the tunnel; describe the target.

        Anything left by an earlier attempt of this migration is stopped
        and removed first: a mirror always starts on a fresh T.
        """
        abandon(self.run_dir, self.target_path)
        os.makedirs(self.run_dir, mode=0o700)
        os.chmod(self.run_dir, 0o700)  # whatever the umask
        started = time.monotonic()
        try:
            if self.target_path is not None:
                qemu_img.create(self.target_path, "qcow2",
                                size=self.virtual_size,
                                backing_file=self.base,
                                backing_fmt=self.base_format)
            self.qsd.start()
            self._save_state()
            if self.write_behind is not None and not self.qsd.direct_io:
                # Buffered T: keep the disk writing it (writebehind.py).
                self.write_behind.start()
            if self.endpoint is not None:
                self.tunnel = tunnel.ReverseTunnel(
                    self.endpoint, self.ssh_options, self.qsd.nbd_socket,
                    tunnel.remote_socket_path(self.remote_socket_dir),
                    owner=self.socket_owner,
                    log_file=os.path.join(self.run_dir, TUNNEL_LOG),
                    ready_timeout=self.tunnel_ready_timeout)
                self.tunnel.start()
                self._save_state()
        except BaseException:
            self._teardown(remove_target=True)
            raise
        self.state = "exporting"
        self.prepared_at = time.time()
        LOG.info("Migration %s: mirror target %s exported in %.2f s",
                 self.migration_id, self.target_path,
                 time.monotonic() - started)
        return self.describe()

    def describe(self):
        """What the source side needs: where to copy, as libvirt XML too."""
        if self.tunnel is not None:
            socket = self.tunnel.remote_socket
            where = "source host"
        else:
            socket = self.qsd.nbd_socket
            where = "this node"
        return {
            "migration_id": self.migration_id,
            "target_path": self.target_path,
            "virtual_size": self.virtual_size,
            "base": self.base,
            "export": self.export,
            "nbd": {"transport": "unix", "socket": socket,
                    "on": where},
            "dest_xml": nbd.dest_xml(self.export, socket=socket),
            "qsd_pid": self.qsd.pid,
            "tunnel_pid": self.tunnel.pid if self.tunnel else None,
        }

    def check(self):
        """Raise if the daemon or the tunnel died."""
        self.qsd.check()
        if self.tunnel is not None:
            self.tunnel.check()

    def status(self):
        result = {
            "migration_id": self.migration_id,
            "state": self.state,
            "qsd_alive": self.qsd.alive(),
            "tunnel_alive": (self.tunnel.alive() if self.tunnel is not None
                             else None),
            "written_bytes": self.qsd.written_bytes(),
            "target_path": self.target_path,
            "error": self.error,
        }
        if self.state == "exporting":
            try:
                self.check()
            except mirror_errors.MirrorError as exc:
                self.state = "failed"
                self.error = exc.message
                result.update(state=self.state, error=self.error)
        return result

    def finish(self):
        """Close the export and T cleanly, fsync T: durable afterwards.

        The source's job must have ended (cutover) before: whatever it
        writes after this is lost.  A daemon that died is an error (its T
        is not durable); a dead tunnel is not, once the job has ended.
        """
        try:
            self.qsd.check()
            closed_after = self.qsd.stop()
        except mirror_errors.MirrorError as exc:
            self.state = "failed"
            self.error = exc.message
            self._teardown(remove_target=False)
            raise
        finally:
            if self.write_behind is not None:
                self.write_behind.stop()
        # The daemon ignored every flush (qsd.py): this is T's first.
        started = time.monotonic()
        if self.target_path is not None:
            fileutils.fsync_file(self.target_path)
        synced_after = time.monotonic() - started
        if self.tunnel is not None:
            self.tunnel.close()
        self._remove_run_dir()
        self.state = "finished"
        return {"target_path": self.target_path,
                "closed_seconds": round(closed_after + synced_after, 4),
                "fsync_seconds": round(synced_after, 4)}

    def abort(self):
        """Stop everything and remove T; the source is not touched."""
        self._teardown(remove_target=True)
        self.state = "aborted"

    # -- internals ----------------------------------------------------------

    def _teardown(self, remove_target):
        if self.write_behind is not None:
            self.write_behind.stop()
        if self.tunnel is not None:
            self.tunnel.kill()
        self.qsd.kill()
        if remove_target and self.target_path is not None:
            fileutils.remove_if_exists(self.target_path)
        self._remove_run_dir()

    def _remove_run_dir(self):
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _save_state(self):
        procs = {}
        for name, pid in (("qsd", self.qsd.pid),
                          ("tunnel", self.tunnel.pid if self.tunnel
                           else None)):
            if pid is not None:
                procs[name] = {"pid": pid, "start_time": _start_time(pid)}
        fileutils.write_json_atomic(
            os.path.join(self.run_dir, STATE_FILE),
            {"migration_id": self.migration_id,
             "target_path": self.target_path, "processes": procs})


def abandon(run_dir, target_path):
    """Stop what an earlier agent left for this migration; remove T.

    Only the processes the state file names are signalled, and only if
    their PID still names the same process (start time).
    """
    try:
        with open(os.path.join(run_dir, STATE_FILE)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = {}
    for name, proc in sorted(state.get("processes", {}).items()):
        pid, start = proc.get("pid"), proc.get("start_time")
        if not isinstance(pid, int) or start is None:
            continue
        if _start_time(pid) == start:
            LOG.warning("Stopping leftover mirror %s (pid %d)", name, pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    shutil.rmtree(run_dir, ignore_errors=True)
    if target_path is not None:  # a data disk's target has no T
        fileutils.remove_if_exists(target_path)
