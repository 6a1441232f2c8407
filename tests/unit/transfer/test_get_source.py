"""transfer.get_source: what every request must be, whatever its transport.

Each transport's own keys and values are tested with it (test_path.py,
test_ssh.py, test_nfs.py).
"""

import pytest

from cs2os_agent import conf
from cs2os_agent import transfer
from cs2os_agent.common import exception


@pytest.mark.parametrize("bad, words", [
    (None, "must be a dict"),
    ({"path": "/x"}, "unknown transport"),
    ({"transport": "nfs", "path": "/x"}, "missing export, server"),
    ({"transport": "path"}, "missing path"),
    ({"transport": "path", "path": "/x", "port": 1}, "unknown port"),
])
def test_get_source_rejects_malformed_requests(bad, words):
    with pytest.raises(exception.InvalidSource, match=words):
        transfer.get_source(bad, conf.CONF)
