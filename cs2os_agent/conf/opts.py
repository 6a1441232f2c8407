"""Entry point for oslo-config-generator (``oslo.config.opts``)."""

from cs2os_agent import conf


def list_opts():
    """Return [(group, [opts])] for every cs2os option group."""
    return [
        (group, opts)
        for module in conf.ALL_MODULES
        for group, opts in module.list_opts().items()
    ]


def set_defaults():
    """``oslo.config.opts.defaults``: the defaults cs2os gives the
    libraries' options, so the sample config shows what the services use."""
    # Imported here: the CLI-only install has neither oslo.messaging's
    # server side nor oslo.middleware, and never runs the generator.
    from cs2os_agent.api import cors_defaults
    from cs2os_agent.common import rpc
    rpc.set_defaults()
    cors_defaults.set_defaults()
