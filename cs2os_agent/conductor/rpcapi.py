"""Client side of the cs2os-conductor RPC API.

Only the part the agent needs exists so far; the conductor service adds
the rest of the API.

API version history:

    1.0 - Initial version: report_progress.
"""

import oslo_messaging as messaging

from cs2os_agent.common import rpc

TOPIC = "cs2os-conductor"
RPC_API_VERSION = "1.0"


class ConductorAPI:
    def __init__(self, topic=TOPIC):
        target = messaging.Target(topic=topic, version=RPC_API_VERSION)
        self.client = rpc.get_client(target, version_cap=RPC_API_VERSION)

    def report_progress(self, context, migration_id, progress):
        """Fire-and-forget: a copy must not wait on the conductor."""
        self.client.prepare(version="1.0").cast(
            context,
            "report_progress",
            migration_id=migration_id,
            progress=progress,
        )
