"""[api]: how cs2os-api listens and authenticates its callers."""

from oslo_config import cfg

GROUP = "api"

api_group = cfg.OptGroup(GROUP, title="cs2os-api options")

api_opts = [
    cfg.HostAddressOpt(
        "bind_host",
        default="0.0.0.0",  # noqa: S104 - a service, like nova-api
        help="Address cs2os-api listens on (the simple server of the "
        "cs2os-api command; under uwsgi or mod_wsgi the web server "
        "decides).",
    ),
    cfg.PortOpt("bind_port", default=9877,
                help="Port cs2os-api listens on."),
    cfg.StrOpt(
        "auth_strategy",
        default="keystone",
        choices=[
            ("keystone", "Keystone tokens checked by keystonemiddleware's "
             "auth_token ([keystone_authtoken] section)."),
            ("noauth", "No authentication: every caller is an admin. Only "
             "for tests and development on a closed host."),
        ],
        help="How callers are authenticated.",
    ),
    cfg.IntOpt(
        "max_limit",
        default=1000,
        min=1,
        help="Most migrations one GET /v1/migrations page returns; a "
        "larger ?limit is cut to this and the reply links to the next "
        "page.",
    ),
    cfg.IntOpt(
        "conductor_timeout",
        default=30,
        min=1,
        help="Seconds an API request waits for cs2os-conductor before it "
        "answers 503.",
    ),
]


def register_opts(conf):
    conf.register_group(api_group)
    conf.register_opts(api_opts, group=api_group)


def list_opts():
    return {GROUP: api_opts}
