"""The operator guide's version figures are the code's.

doc/source/operator.md lists every API microversion in a table, shows the
version document, and names the conductor's RPC API version; each is
written by hand, and each has drifted before (the table stopped at 1.14
while 1.15 was served).
"""

import os
import re

from cs2os_agent.common import microversions
from cs2os_agent.conductor import rpcapi

GUIDE = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir,
                     "doc", "source", "operator.md")


def _guide():
    with open(GUIDE) as f:
        return f.read()


def test_the_microversion_table_lists_every_version_once():
    rows = re.findall(r"^\| (1\.\d+) \| ", _guide(), re.MULTILINE)
    assert rows == [version for version, *_ in microversions.HISTORY]


def test_the_version_document_shows_the_newest_version():
    newest = str(microversions.MAX_VERSION)
    assert '"max_version": "%s", "version": "%s"' % (newest, newest) in \
        _guide()


def test_the_conductor_section_names_its_rpc_api_version():
    assert "API %s in `cs2os_agent.conductor.rpcapi.ConductorAPI`" % \
        rpcapi.RPC_API_VERSION in _guide().replace("\n", " ")
