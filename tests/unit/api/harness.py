"""What the cs2os-api tests share: a recording conductor, a record, and
a way to send one request through the WSGI application in process.

The conductor behind the API is a recording stand-in here; the real chain
(cs2os-api process -> RabbitMQ -> cs2os-conductor, Keystone tokens, the
openstack CLI) runs in tests/functional/test_api.py and tests/e2e.
"""

import json

import webob

MID = "5b0c1f9e-4a41-4c1e-9d59-1d2c1a1e2f30"
# An admin of project p-7, as the noauth pipeline reads the headers.
ADMIN = {"X-User-Id": "ops", "X-Project-Id": "p-7"}
DEEP = b"[" * 100000  # under the body size limit; was a RecursionError


def make_record(**values):
    """A migration record as the conductor returns it, bookkeeping too."""
    record = {"id": MID, "state": "queued", "step": "validate",
              "mode": "cold", "source_ref": "web-1", "bytes_done": 0,
              "bytes_total": 0, "rate_bps": 0, "result": {},
              "resources": {}, "lease_until": "2026-11-26T00:00:00",
              "conductor": "ctl-1", "options": {"x": 1}, "events": [
                  {"created_at": "2026-11-26T00:00:00", "step": "validate",
                   "kind": "info", "message": "queued"}]}
    record.update(values)
    return record


class RecordingConductor:
    """Answers like ConductorAPI and remembers each call."""

    def __init__(self):
        self.calls = []
        self.raises = None
        self.records = [make_record()]
        # Merged into the record every other call returns.
        self.values = {}

    def _answer(self, name, context, **kwargs):
        self.calls.append((name, context, kwargs))
        if self.raises is not None:
            raise self.raises
        if name == "list_migrations":
            return self.records
        return make_record(**dict(self.values, **(
            {"state": "cancelling"} if name == "cancel_migration" else {})))

    def __getattr__(self, name):
        # The first positional argument is "arg", any further ones "args".
        return lambda context, *args, **kwargs: self._answer(
            name, context, **dict({"arg": args[0]} if args else {},
                                  **dict({"args": args[1:]}
                                         if len(args) > 1 else {},
                                         **kwargs)))


def call(app, method, path, body=None, headers=None,
         content_type="application/json"):
    """(response, decoded JSON body or None) of one request to ``app``."""
    req = webob.Request.blank(path, method=method,
                              base_url="http://api.test:9877")
    if body is not None:
        req.body = body if isinstance(body, bytes) else \
            json.dumps(body).encode()
        req.content_type = content_type
    # The current API unless a test asks for an older one (no header is
    # 1.0: tests/unit/api/test_microversions.py).
    req.headers["OpenStack-API-Version"] = "cs2os latest"
    for name, value in (headers or {}).items():
        if value is None:
            del req.headers[name]
        else:
            req.headers[name] = value
    resp = req.get_response(app)
    data = json.loads(resp.body) if resp.body else None
    return resp, data


def error(data):
    """The one error of an API-SIG error body."""
    (only,) = data["errors"]
    return only
