"""Cinder volumes and Nova attachments, as data disks need them.

The client is scoped to the migration's target project (clients.py): the
volumes are the owner's.  Every volume cs2os creates carries its
migration id and the CloudStack volume's id in its metadata, so a retry
finds what an earlier attempt created, and a rollback deletes exactly
those.
"""

import time

from openstack import exceptions as sdk_exc

from cs2os_agent.common import backoff
from cs2os_agent.common import exception
from cs2os_agent.openstack import client as os_client

MIGRATION_KEY = os_client.MIGRATION_KEY
CLOUDSTACK_VOLUME_KEY = "cs2os_cloudstack_volume_id"
GiB = 1024 ** 3


def _error(operation, exc):
    return exception.OpenStackError(operation=operation, reason=exc)


class VolumeClient:
    def __init__(self, conn, wait_timeout=600, poll_interval=1):
        self.conn = conn
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval

    def headroom(self):
        """What the project's Cinder quota still allows: (gigabytes,
        volumes), None for unlimited."""
        try:
            limits = self.conn.block_storage.get_limits().absolute
        except sdk_exc.SDKException as exc:
            raise _error("read the project's Cinder limits", exc) from None

        def left(maximum, used):
            return None if maximum is None or maximum < 0 else \
                max(0, maximum - (used or 0))

        return (left(limits.max_total_volume_gigabytes,
                     limits.total_gigabytes_used),
                left(limits.max_total_volumes, limits.total_volumes_used))

    def volume_type_exists(self, ref):
        try:
            return self.conn.block_storage.find_type(
                ref, ignore_missing=True) is not None
        except sdk_exc.SDKException as exc:
            raise _error("look up volume type %s" % ref, exc) from None

    def find_volumes(self, migration_id):
        """{CloudStack volume id: Volume} this migration created.

        Only a volume cs2os made itself counts: created by cs2os's user in
        this project, with the migration's id in its metadata.  Metadata
        alone proves nothing (any member of the project can set it), and
        a volume found here is written over and deleted on rollback.
        Cinder shows a volume's project to admins only: unknown is
        accepted, since the listing is of this project's volumes anyway.
        """
        project_id, user_id = os_client.own_identity(self.conn)
        found = {}
        try:
            for volume in self.conn.block_storage.volumes(details=True):
                meta = volume.metadata or {}
                if (meta.get(MIGRATION_KEY) == migration_id
                        and volume.user_id == user_id
                        and volume.project_id in (None, project_id)):
                    found[meta.get(CLOUDSTACK_VOLUME_KEY)] = volume
        except sdk_exc.SDKException as exc:
            raise _error("list the project's volumes", exc) from None
        return found

    def create_volume(self, name, size_gib, volume_type, migration_id,
                      cloudstack_volume_id, description):
        attrs = {"name": name, "size": size_gib, "description": description,
                 "metadata": {MIGRATION_KEY: migration_id,
                              CLOUDSTACK_VOLUME_KEY: cloudstack_volume_id}}
        if volume_type:
            attrs["volume_type"] = volume_type
        try:
            return self.conn.block_storage.create_volume(**attrs)
        except sdk_exc.SDKException as exc:
            raise _error("create volume %s" % name, exc) from None

    def get_volume(self, volume_id):
        try:
            return self.conn.block_storage.get_volume(volume_id)
        except sdk_exc.NotFoundException:
            return None
        except sdk_exc.SDKException as exc:
            raise _error("read volume %s" % volume_id, exc) from None

    def wait_volume(self, volume_id, status):
        """Wait for ``status`` (or one of a tuple of them); error states or
        the deadline fail."""
        wanted = (status,) if isinstance(status, str) else tuple(status)
        status = " or ".join(wanted)
        deadline = time.monotonic() + self.wait_timeout
        delays = backoff.delays(self.poll_interval)
        while True:
            volume = self.get_volume(volume_id)
            if volume is None:
                raise exception.OpenStackError(
                    operation="volume %s to become %s" % (volume_id, status),
                    reason="it is gone")
            if volume.status in wanted:
                return volume
            if volume.status.startswith("error"):
                raise exception.OpenStackError(
                    operation="volume %s to become %s" % (volume_id, status),
                    reason="it went to %s" % volume.status)
            if time.monotonic() > deadline:
                raise exception.OpenStackError(
                    operation="volume %s to become %s" % (volume_id, status),
                    reason="still %s after %d s" % (volume.status,
                                                    self.wait_timeout))
            time.sleep(next(delays))

    def attached_volumes(self, server_id):
        """The ids of the volumes Nova has attached to the server, in the
        order of their attachments."""
        try:
            return [a.volume_id for a in
                    self.conn.compute.volume_attachments(server_id)]
        except sdk_exc.SDKException as exc:
            raise _error("list server %s's volumes" % server_id,
                         exc) from None

    def attach(self, server_id, volume_id):
        """Attach through Nova (the server stopped: Nova writes the disk
        into its definition) and wait for the volume to be in-use."""
        try:
            self.conn.compute.create_volume_attachment(server_id,
                                                       volume_id=volume_id)
        except sdk_exc.SDKException as exc:
            raise _error("attach volume %s to server %s"
                         % (volume_id, server_id), exc) from None
        return self.wait_volume(volume_id, "in-use")

    def delete_volume(self, volume_id):
        """Delete once it is available (a server's deletion detaches it
        first); gone already is fine."""
        volume = self.get_volume(volume_id)
        if volume is None:
            return False
        if volume.status == "deleting":  # an earlier attempt's delete
            return self._wait_gone(volume_id)
        if volume.status not in ("available", "error"):
            self.wait_volume(volume_id, "available")
        try:
            self.conn.block_storage.delete_volume(volume_id)
        except sdk_exc.NotFoundException:
            return True
        except sdk_exc.SDKException as exc:
            raise _error("delete volume %s" % volume_id, exc) from None
        return self._wait_gone(volume_id)

    def _wait_gone(self, volume_id):
        deadline = time.monotonic() + self.wait_timeout
        delays = backoff.delays(self.poll_interval)
        while self.get_volume(volume_id) is not None:
            if time.monotonic() > deadline:
                raise exception.OpenStackError(
                    operation="delete volume %s" % volume_id,
                    reason="still there after %d s" % self.wait_timeout)
            time.sleep(next(delays))
        return True
