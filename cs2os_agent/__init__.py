"""cs2os: move KVM virtual machines from Apache CloudStack into OpenStack."""

import warnings

# futurist imports eventlet merely because it is installed (oslo.service
# depends on it); its deprecation banner says nothing about cs2os.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from oslo_service import backend as _service_backend  # noqa: E402

__version__ = "0.1.0"

# cs2os runs on plain threads and never monkey-patches.  oslo.messaging
# imports oslo.service, whose default backend is eventlet, so the threading
# backend has to be chosen before anything imports oslo.messaging; our
# console scripts import this package first.  A process that embeds cs2os
# (a test runner, another service) and chose first keeps its choice.
try:
    _service_backend.init_backend(_service_backend.BackendType.THREADING)
except _service_backend.exceptions.BackendAlreadySelected:
    pass
