"""cs2os-api as a server of an older microversion would run it.

``python -m tests.functional.older_api --config-file ...`` is the real
cs2os-api (cs2os_agent.cmd.api) with the microversion table cut after
$CS2OS_TEST_API_MAX (e.g. 1.5), before anything reads it: the same code
answering as an API that has not learnt the later versions yet, for the
CLI's negotiation with an older server (test_api_microversions.py).
"""

import os
import sys

from cs2os_agent.common import microversions


def _cut(last):
    versions = [v for v, _d, _k in microversions.HISTORY]
    if last not in versions:
        raise SystemExit("CS2OS_TEST_API_MAX=%r is not one of %s"
                         % (last, ", ".join(versions)))
    microversions.HISTORY = microversions.HISTORY[
        :versions.index(last) + 1]
    microversions.FEATURES = microversions._features()
    microversions.MAX_VERSION = microversions.Version.parse(last)


if __name__ == "__main__":
    _cut(os.environ["CS2OS_TEST_API_MAX"])
    from cs2os_agent.cmd import api

    sys.exit(api.main())
