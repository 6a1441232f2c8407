"""Entry point for oslo-config-generator (``oslo.config.opts``)."""

from cs2os_agent import conf


def list_opts():
    """Return [(group, [opts])] for every cs2os option group."""
    return [
        (group, opts)
        for module in conf.ALL_MODULES
        for group, opts in module.list_opts().items()
    ]
