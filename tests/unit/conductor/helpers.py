"""What the manager's tests share: plain names, imported.

The engine and agent API a ConductorManager is given (the ``mgr`` fixture
in conftest.py), the requester, and a warm migration held READY for its
cutover action.
"""

from cs2os_agent.common import context

CTXT = context.RequestContext(user_id="alice", project_id="p1")


class Engine:
    def __init__(self):
        self.submitted = []
        self.cancelled = []

    def submit(self, mid):
        self.submitted.append(mid)

    def cancel(self, mid):
        self.cancelled.append(mid)


class Agent:
    def __init__(self):
        self.cancels = []

    def cancel(self, ctxt, host, mid):
        self.cancels.append((host, mid))


def held(mgr, **request_):
    m = mgr.create_migration(CTXT, dict({"source": "vm", "mode": "warm",
                                         "cutover": "manual"}, **request_))
    mgr.db.update_migration(m["id"], {"state": "running", "step": "ready"})
    return m["id"]
