"""Guru Meditation Reports (oslo.reports) of the cs2os services.

``kill -USR2 <pid>`` makes a running cs2os-agent, cs2os-conductor or
cs2os-api write a report of itself, as Nova's services do: the version,
the stack of every thread, the process and its children, and the
configuration (options marked secret show as ``***``).  It goes to the
service's stderr (the journal under systemd), or to a file of its own in
``[oslo_reports] log_dir``; ``[oslo_reports] file_event_handler`` makes a
change to that file trigger it instead of the signal.  The service keeps
running.
"""

from importlib import metadata

from oslo_reports import guru_meditation_report as gmr
from oslo_reports import opts as gmr_opts

import cs2os_agent

DISTRIBUTION = "cs2os"


class VersionInfo:
    """What oslo.reports' Package section asks of a version object (Nova
    passes pbr's VersionInfo; cs2os is not built with pbr)."""

    def vendor_string(self):
        return "cs2os developers"

    def product_string(self):
        return "cs2os (CloudStack KVM to OpenStack migrations)"

    def version_string_with_package(self):
        try:
            installed = metadata.version(DISTRIBUTION)
        except metadata.PackageNotFoundError:
            installed = None
        if installed in (None, cs2os_agent.__version__):
            return cs2os_agent.__version__
        # Run from a tree whose version differs from the installed one.
        return "%s (installed distribution %s)" % (cs2os_agent.__version__,
                                                    installed)


VERSION = VersionInfo()


def setup(conf, service_name):
    """Register [oslo_reports] on ``conf`` and arm the report (SIGUSR2,
    or the watched file); call once the configuration is parsed."""
    gmr_opts.set_defaults(conf)
    gmr.TextGuruMeditation.setup_autorun(VERSION, service_name=service_name,
                                         conf=conf)
