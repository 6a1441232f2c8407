"""The OpenStackClient plugin contract for cs2os, and nothing else.

OSC imports this module for every ``openstack`` invocation, so it imports
only what building the option parser needs; the REST client is imported
when a cs2os command first asks for ``client_manager.cs2os``.
"""

import logging

from osc_lib import utils

LOG = logging.getLogger(__name__)

API_NAME = "cs2os"
API_VERSION_OPTION = "os_cs2os_api_version"
DEFAULT_API_VERSION = "1"
API_VERSIONS = {"1": "cs2os_agent.osc.client.Client"}

SERVICE_TYPE = "cs2os"
# OSC turns the argparse dest ``os_<x>`` into the config key ``<x>``, and
# ``<service type>_endpoint_override`` is the key osc-lib's ClientManager
# and openstacksdk already honour, so clouds.yaml works for it too.
ENDPOINT_OVERRIDE_KEY = SERVICE_TYPE + "_endpoint_override"


def make_client(instance):
    """Return a cs2os REST client on the user's keystoneauth session.

    The endpoint comes from the service catalog (service type ``cs2os``,
    the user's region and interface) unless ``--os-cs2os-endpoint`` or
    ``OS_CS2OS_ENDPOINT`` names one.
    """
    version = getattr(instance, "_api_version", {}).get(
        API_NAME, DEFAULT_API_VERSION
    )
    # "1.N" pins microversion N of API 1; "1" negotiates (osc/versions.py).
    from cs2os_agent.osc import versions

    microversion = versions.parse_option(version)
    client_class = utils.get_client_class(
        API_NAME, version.split(".")[0], API_VERSIONS)
    endpoint_override = instance.get_configuration().get(
        ENDPOINT_OVERRIDE_KEY
    )
    LOG.debug("Instantiating cs2os client %s (endpoint override %s)",
              client_class, endpoint_override)
    return client_class(
        session=instance.session,
        service_type=SERVICE_TYPE,
        region_name=instance.region_name,
        interface=instance.interface,
        endpoint_override=endpoint_override,
        api_version=microversion,
    )


def check_api_version(version):
    """OSC's hook for ``--os-cs2os-api-version``: "1", "1.latest" or
    "1.N" up to this client's newest; True skips OSC's own check, which
    knows only the major versions of API_VERSIONS."""
    from cs2os_agent.osc import versions

    versions.parse_option(version)
    return True


def build_option_parser(parser):
    """Add the cs2os global options to the ``openstack`` parser."""
    parser.add_argument(
        "--os-cs2os-api-version",
        metavar="<cs2os-api-version>",
        default=utils.env(
            "OS_CS2OS_API_VERSION", default=DEFAULT_API_VERSION
        ),
        help="cs2os API version: 1 (default) speaks the newest microversion "
        "this client and the server share, 1.N pins microversion N "
        "(Env: OS_CS2OS_API_VERSION)",
    )
    parser.add_argument(
        "--os-cs2os-endpoint",
        dest="os_" + ENDPOINT_OVERRIDE_KEY,
        metavar="<url>",
        default=utils.env("OS_CS2OS_ENDPOINT"),
        help="Root URL of the cs2os API, used instead of the service "
        "catalog (Env: OS_CS2OS_ENDPOINT)",
    )
    return parser
