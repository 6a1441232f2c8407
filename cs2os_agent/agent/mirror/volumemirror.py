"""A data disk's mirror target: its Cinder volume, exported over NBD.

A warm migration of a VM with data disks mirrors each one, in full (the
volume has no base), straight into the Cinder volume Nova attached to the
stopped server, found where the domain XML points (agent/volume_target.py):

- ``rbd``: the daemon opens ``pool/volume-<id>`` with QEMU's librbd
  driver, as the cephx user of the disk's ``<auth>``; the key (libvirt's
  secret, or ``[agent] ceph_keyring_dir``) reaches the daemon as a QMP
  ``secret`` object read from a 0600 file in a 0700 directory that exists
  only while the daemon opens the volume (never argv, and never a QMP
  command: qemu.qmp logs those at DEBUG);
- ``block``: the host block device, O_DIRECT; ``file``: the file.

A ``raw`` node of exactly the source disk's size (QEMU's mirror refuses a
target of another size; the volume is rounded up to GiB and its tail reads
as zeros, as Cinder made it) is exported writable, as T is
(:mod:`.target`), with its own daemon, run directory and ``ssh -R`` tunnel.
Both nodes take ``discard=unmap``: the mirror zeroes what the source does
not hold with unmap allowed, so RBD discards instead of writing zeros and
a thin volume stays thin; ``detect-zeroes=unmap`` does the same for data
that is all zeros.  ``finish`` closes the nodes (RBD flushes on close):
the volume holds the guest view the source had when its jobs ended.
"""

import os
import shutil

from oslo_log import log as logging

from cs2os_agent.agent.mirror import qsd
from cs2os_agent.agent.mirror import qsdgraph
from cs2os_agent.agent.mirror import target as mirror_target
from cs2os_agent.common import exception
from cs2os_agent.common import mirror_errors
from cs2os_agent.common import nbd

LOG = logging.getLogger(__name__)

SECRET_ID = "cs2os-volume-key"  # noqa: S105 - an object id, no secret
V_FILE, V_FMT = "v-file", "v-fmt"
CLOSE_ORDER = (V_FMT, V_FILE)


def export_name(migration_id, volume_id):
    """The NBD export of one data disk's volume (the conductor names it
    the same way: no user text)."""
    return nbd.export_name("%s/%s" % (migration_id, volume_id))


def file_node(target, key_b64, key_file=None):
    """(QMP commands before the file node, the file node's options);
    ``key_file`` holds ``key_b64`` while the daemon opens the volume."""
    if target.fmt != "raw":
        raise exception.VolumeNotWritable(
            volume_id=target.volume_id, instance_uuid="-",
            reason="a warm migration mirrors into raw volumes only, this "
            "one is %s (use mode cold)" % target.fmt)
    if target.kind == "rbd":
        pool, _, image = target.path.partition("/")
        node = {"driver": "rbd", "pool": pool, "image": image}
        if target.hosts:
            node["server"] = [{"host": host, "port": str(port)}
                              for host, port in target.hosts]
        before = []
        if target.user:
            if key_b64 is None:
                raise exception.VolumeNotWritable(
                    volume_id=target.volume_id, instance_uuid="-",
                    reason="no key for cephx user %s" % target.user)
            # By file: qemu.qmp logs every command it sends at DEBUG,
            # so the key itself must not be in one.
            before.append(("object-add", {
                "qom-type": "secret", "id": SECRET_ID, "file": key_file,
                "format": "base64"}))
            node.update({"user": target.user, "key-secret": SECRET_ID,
                         "auth-client-required": ["cephx"]})
        return before, node
    if target.kind == "block":
        return [], {"driver": "host_device", "filename": target.path,
                    "cache": {"direct": True}, "aio": "native"}
    return [], {"driver": "file", "filename": target.path}


def graph_commands(target, key_b64, virtual_size, nbd_socket, export,
                   key_file=None):
    """The QMP commands that open the volume and export its first
    ``virtual_size`` bytes, writable."""
    before, node = file_node(target, key_b64, key_file)
    return before + [
        ("blockdev-add", dict(node, **{"node-name": V_FILE,
                                       "discard": "unmap"})),
        ("blockdev-add", {"driver": "raw", "node-name": V_FMT,
                          "file": V_FILE, "size": int(virtual_size),
                          "discard": "unmap", "detect-zeroes": "unmap"}),
        ("nbd-server-start", {"addr": {"type": "unix",
                                       "data": {"path": nbd_socket}}}),
        ("block-export-add", {"type": "nbd", "id": qsdgraph.EXPORT_ID,
                              "node-name": V_FMT, "name": export,
                              "writable": True}),
    ]


def run_dir_for(run_root, migration_id, volume_id):
    return mirror_target.run_dir_for(run_root, "%s/%s" % (migration_id,
                                                         volume_id))


class VolumeMirrorTarget(mirror_target.MirrorTarget):
    """A MirrorTarget whose export is a Cinder volume, not T: the same
    tunnel, state file, status and teardown; no T file to create or
    remove, and no write-behind (nothing buffered in the page cache)."""

    def __init__(self, migration_id, volume_target, key_b64, virtual_size,
                 run_root, endpoint=None, ssh_options=None,
                 remote_socket_dir="/tmp", socket_owner=None,
                 qsd_binary=qsd.BINARY, instance_uuid=None,
                 tunnel_ready_timeout=None):
        self.volume_id = volume_target.volume_id
        self.volume = volume_target
        super().__init__(
            migration_id, None, None, "raw", virtual_size, run_root,
            endpoint=endpoint, ssh_options=ssh_options,
            remote_socket_dir=remote_socket_dir, socket_owner=socket_owner,
            qsd_binary=qsd_binary, instance_uuid=instance_uuid,
            tunnel_ready_timeout=tunnel_ready_timeout,
            run_dir=run_dir_for(run_root, migration_id, self.volume_id),
            export=export_name(migration_id, self.volume_id))
        nbd_socket = os.path.join(self.run_dir, qsd.NBD_SOCKET)
        self.key_b64 = key_b64
        # A private directory of its own: the run directory is made
        # afresh by prepare(); the key lives there only while the daemon
        # opens the volume.
        self.key_dir = self.run_dir + ".key"
        self.qsd = qsd.StorageDaemon(
            self.run_dir, volume_target.describe(), None, self.export,
            binary=qsd_binary,
            graph=graph_commands(volume_target, key_b64, self.virtual_size,
                                 nbd_socket, self.export,
                                 os.path.join(self.key_dir, "key")),
            close_order=CLOSE_ORDER)
        self.target_path = None
        self.write_behind = None

    def prepare(self):
        """MirrorTarget.prepare, with the cephx key in a 0600 file of a
        0700 directory for as long as the daemon needs it to open the
        volume."""
        if not self.key_b64:
            return super().prepare()
        shutil.rmtree(self.key_dir, ignore_errors=True)
        os.makedirs(self.key_dir, mode=0o700)
        try:
            fd = os.open(os.path.join(self.key_dir, "key"),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.key_b64)
            return super().prepare()
        finally:
            shutil.rmtree(self.key_dir, ignore_errors=True)

    def abort(self):
        """Close the volume cleanly, then stop everything.

        A daemon killed with the image open leaves its RBD watch behind
        for Ceph's watch timeout (~30 s): Cinder then refuses to delete
        the volume (ImageBusy), and the rollback deletes it right after.
        Closing the nodes first ends the watch; the source's jobs ended
        before (undo_job runs first), so nothing writes any more.
        """
        if self.qsd.alive():
            try:
                self.qsd.stop(mode="hard", grace=0)
            except mirror_errors.MirrorError as exc:
                LOG.warning("Migration %s: volume %s not closed cleanly "
                            "(%s); killing its daemon", self.migration_id,
                            self.volume_id, exc)
        super().abort()

    def describe(self):
        return dict(super().describe(), volume_id=self.volume_id,
                    volume=self.volume.describe(),
                    target_dev=self.volume.target_dev)
