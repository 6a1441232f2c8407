# Import cs2os_agent before any test module imports oslo.messaging, so the
# test process runs on the same threading backend as the services.
import cs2os_agent  # noqa: F401
