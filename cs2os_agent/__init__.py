"""cs2os: move KVM virtual machines from Apache CloudStack into OpenStack."""

import warnings

# futurist imports eventlet merely because it is installed (oslo.service
# depends on it); its deprecation banner says nothing about cs2os.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
# eventlet imports dnspython, whose DSA key classes make cryptography warn
# at import: eight lines at the top of every cs2os command's output
# (even `cs2os-status upgrade check`) about code cs2os never calls.
warnings.filterwarnings("ignore", message=r"DSA is deprecated",
                        module=r"dns\.")

__version__ = "0.1.0"

try:
    from oslo_service import backend as _service_backend
except ImportError:  # the CLI alone (no extra): no service runs here
    _service_backend = None

# cs2os runs on plain threads and never monkey-patches.  oslo.messaging
# selects oslo.service's backend when it is imported, and the default is
# eventlet, so the threading backend must be the default before anything
# imports oslo.messaging; our console scripts import this package first.
# A hook (not init_backend) chooses it only when the backend is first
# needed: `openstack` loads this package for every command through the
# CLI plugin, and importing the threading backend costs 0.3 s.  A process
# that embeds cs2os (a test runner, another service) and chose first keeps
# its choice.
if _service_backend is not None:
    _service_backend.register_backend_default_hook(
        lambda: _service_backend.BackendType.THREADING)
