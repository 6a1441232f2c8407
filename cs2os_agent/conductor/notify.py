"""cs2os.migration.{create,start,end,error} notifications on the bus."""

import oslo_messaging as messaging

from cs2os_agent.common import rpc


class MigrationNotifier:
    def __init__(self, conf, host):
        transport = messaging.get_notification_transport(conf)
        self._notifier = messaging.Notifier(
            transport,
            publisher_id="cs2os-conductor.%s" % host,
            serializer=rpc.RequestContextSerializer(),
        )

    def emit(self, context, what, migration):
        payload = {k: v for k, v in migration.items() if k != "events"}
        event_type = "cs2os.migration.%s" % what
        if what == "error":
            self._notifier.error(context, event_type, payload)
        else:
            self._notifier.info(context, event_type, payload)
