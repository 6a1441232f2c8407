"""Client side of the cs2os-agent RPC API (what the conductor calls).

API version history:

    1.0 - Initial version: get_agent_info, probe_instance, sync_overlay,
          swap_disk, restore_disk, cleanup, cancel.
    1.1 - Warm migration: prepare_mirror, mirror_status, finish_mirror,
          abort_mirror.
    1.2 - sync_overlay takes layers: the chain's layers between the
          template and the overlay, merged into the staged file.
    1.3 - sync_overlay takes keep_snapshots: copy the whole file and keep
          its internal snapshots (else they are dropped, and the data only
          they need is not copied).
    1.4 - sync_volume: write a CloudStack data disk (its chain of files)
          into the Cinder volume Nova attached to the instance;
          sync_overlay takes fmt: raw for a root volume that is one raw
          image (RBD primary storage), staged as a standalone qcow2.
    1.5 - Warm migration of data disks: prepare_volume_mirror,
          volume_mirror_status, finish_volume_mirror, abort_volume_mirror
          (a data disk mirrored into the Cinder volume attached to the
          instance).
    1.6 - Live mode: prepare_live_target, live_hop, live_hop_back,
          begin_live_move, finish_live_move, abort_live_move.
"""

import oslo_messaging as messaging

from cs2os_agent import conf
from cs2os_agent.common import rpc

CONF = conf.CONF

TOPIC = "cs2os-agent"
RPC_API_VERSION = "1.6"


class AgentAPI:
    """Calls one agent, addressed by its nova-compute host name."""

    def __init__(self, topic=TOPIC):
        target = messaging.Target(topic=topic, version=RPC_API_VERSION)
        self.client = rpc.get_client(target, version_cap=RPC_API_VERSION)

    def _prepare(self, host, long_running=False, version="1.0"):
        if long_running:
            # The call monitor (heartbeats every rpc_response_timeout / 2)
            # lets an hour-long copy finish without hiding a dead agent,
            # as Nova's long_rpc_timeout does.
            return self.client.prepare(
                server=host,
                version=version,
                call_monitor_timeout=CONF.rpc_response_timeout,
                timeout=CONF.long_rpc_timeout,
            )
        return self.client.prepare(server=host, version=version)

    def get_agent_info(self, context, host, timeout=None):
        cctxt = self.client.prepare(
            server=host, version="1.0", timeout=timeout
        )
        return cctxt.call(context, "get_agent_info")

    def probe_instance(self, context, host, instance_uuid):
        return self._prepare(host).call(
            context, "probe_instance", instance_uuid=instance_uuid
        )

    def sync_overlay(self, context, host, migration_id, instance_uuid, source,
                     layers=None, keep_snapshots=False, fmt="qcow2"):
        """``layers``: source dicts (as ``source``) of the chain's layers
        between the template and the overlay, top-down: the first is the
        file the overlay's header names, the last the one that names the
        template.  Sent (1.2) only when there are any, so a 1.0 agent
        still takes a call without layers.  ``keep_snapshots`` likewise
        (1.3), sent only when true."""
        kwargs = {}
        version = "1.0"
        if layers:
            kwargs["layers"], version = list(layers), "1.2"
        if keep_snapshots:
            kwargs["keep_snapshots"], version = True, "1.3"
        if fmt != "qcow2":  # (1.4) a raw root volume (RBD)
            kwargs["fmt"], version = fmt, "1.4"
        return self._prepare(host, long_running=True, version=version).call(
            context,
            "sync_overlay",
            migration_id=migration_id,
            instance_uuid=instance_uuid,
            source=source,
            **kwargs,
        )

    def sync_volume(self, context, host, migration_id, instance_uuid,
                    volume_id, chain, fmt="qcow2"):
        """``chain``: source dicts of the data disk's files, top-down;
        ``fmt``: qcow2, or raw for a single raw image (RBD)."""
        return self._prepare(host, long_running=True, version="1.4").call(
            context,
            "sync_volume",
            migration_id=migration_id,
            instance_uuid=instance_uuid,
            volume_id=volume_id,
            chain=list(chain),
            fmt=fmt,
        )

    def swap_disk(self, context, host, migration_id, instance_uuid):
        return self._prepare(host, long_running=True).call(
            context,
            "swap_disk",
            migration_id=migration_id,
            instance_uuid=instance_uuid,
        )

    def restore_disk(self, context, host, migration_id, instance_uuid):
        return self._prepare(host).call(
            context,
            "restore_disk",
            migration_id=migration_id,
            instance_uuid=instance_uuid,
        )

    def cleanup(self, context, host, migration_id, instance_uuid):
        return self._prepare(host).call(
            context,
            "cleanup",
            migration_id=migration_id,
            instance_uuid=instance_uuid,
        )

    def cancel(self, context, host, migration_id):
        return self._prepare(host).call(
            context, "cancel", migration_id=migration_id
        )

    # -- 1.1: warm migration ------------------------------------------------

    def _prepare_1_1(self, host, long_running=False):
        if long_running:
            return self.client.prepare(
                server=host,
                version="1.1",
                call_monitor_timeout=CONF.rpc_response_timeout,
                timeout=CONF.long_rpc_timeout,
            )
        return self.client.prepare(server=host, version="1.1")

    def prepare_mirror(self, context, host, migration_id, instance_uuid,
                       source):
        # Long: proving D == B may hash or compare the whole base.
        return self._prepare_1_1(host, long_running=True).call(
            context,
            "prepare_mirror",
            migration_id=migration_id,
            instance_uuid=instance_uuid,
            source=source,
        )

    def mirror_status(self, context, host, migration_id):
        return self._prepare_1_1(host).call(
            context, "mirror_status", migration_id=migration_id
        )

    def finish_mirror(self, context, host, migration_id, instance_uuid):
        return self._prepare_1_1(host, long_running=True).call(
            context,
            "finish_mirror",
            migration_id=migration_id,
            instance_uuid=instance_uuid,
        )

    def abort_mirror(self, context, host, migration_id, instance_uuid):
        return self._prepare_1_1(host).call(
            context,
            "abort_mirror",
            migration_id=migration_id,
            instance_uuid=instance_uuid,
        )

    # -- 1.5: warm migration of data disks ----------------------------------

    def prepare_volume_mirror(self, context, host, migration_id,
                              instance_uuid, volume_id, source):
        return self._prepare(host, version="1.5").call(
            context, "prepare_volume_mirror", migration_id=migration_id,
            instance_uuid=instance_uuid, volume_id=volume_id, source=source)

    def volume_mirror_status(self, context, host, migration_id, volume_id):
        return self._prepare(host, version="1.5").call(
            context, "volume_mirror_status", migration_id=migration_id,
            volume_id=volume_id)

    def finish_volume_mirror(self, context, host, migration_id,
                             instance_uuid, volume_id):
        return self._prepare(host, long_running=True, version="1.5").call(
            context, "finish_volume_mirror", migration_id=migration_id,
            instance_uuid=instance_uuid, volume_id=volume_id)

    def abort_volume_mirror(self, context, host, migration_id,
                            instance_uuid, volume_id):
        return self._prepare(host, version="1.5").call(
            context, "abort_volume_mirror", migration_id=migration_id,
            instance_uuid=instance_uuid, volume_id=volume_id)

    # -- 1.6: live mode ------------------------------------------------------

    def prepare_live_target(self, context, host, migration_id, instance_uuid,
                            base_proof, virtual_size=None):
        """``virtual_size``: A's (T's for the hop; grown to Nova's after
        the move)."""
        # Long: proving D == B may hash or compare the whole base.
        return self._prepare(host, long_running=True, version="1.6").call(
            context, "prepare_live_target", migration_id=migration_id,
            instance_uuid=instance_uuid, base_proof=base_proof,
            virtual_size=virtual_size)

    def live_hop(self, context, host, migration_id, instance_uuid, source):
        """``source``: {"host": the KVM host's address, "domain": A's
        libvirt name}."""
        return self._prepare(host, long_running=True, version="1.6").call(
            context, "live_hop", migration_id=migration_id,
            instance_uuid=instance_uuid, source=source)

    def live_hop_back(self, context, host, migration_id, instance_uuid,
                      source):
        return self._prepare(host, long_running=True, version="1.6").call(
            context, "live_hop_back", migration_id=migration_id,
            instance_uuid=instance_uuid, source=source)

    def begin_live_move(self, context, host, migration_id, instance_uuid,
                        wait_seconds):
        return self._prepare(host, long_running=True, version="1.6").call(
            context, "begin_live_move", migration_id=migration_id,
            instance_uuid=instance_uuid, wait_seconds=wait_seconds)

    def finish_live_move(self, context, host, migration_id):
        return self._prepare(host, long_running=True, version="1.6").call(
            context, "finish_live_move", migration_id=migration_id)

    def abort_live_move(self, context, host, migration_id):
        return self._prepare(host, long_running=True, version="1.6").call(
            context, "abort_live_move", migration_id=migration_id)
