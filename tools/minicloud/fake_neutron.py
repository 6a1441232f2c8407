"""A Neutron API STAND-IN for the minicloud: not Neutron, no networking.

Nova 34 talks to the network service even for servers booted with
networks='none' (nova-api lists a server's ports for its security groups,
nova-compute looks up ports and extensions while building and deleting).
Until cs2os brings real networking to its tests, this WSGI app answers those
calls: every collection GET is an empty list, a single resource is 404, a
DELETE is 204, anything else is refused.  No auth: it listens on 127.0.0.1.
Served by uwsgi (up.sh); every request is logged to stderr.
"""

import json
import sys

VERSIONS = {
    "versions": [{
        "id": "v2.0",
        "status": "CURRENT",
        "links": [{"rel": "self", "href": "/v2.0/"}],
    }]
}


def _reply(start_response, status, body=None):
    data = b"" if body is None else json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data))),
                            ("Connection", "close")])
    return [data]


def _error(kind, message):
    return {"NeutronError": {"type": kind, "message": message, "detail": ""}}


def application(environ, start_response):
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "/").rstrip("/")
    sys.stderr.write("fake-neutron %s %s?%s\n"
                     % (method, path, environ.get("QUERY_STRING", "")))
    sys.stderr.flush()
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["v2.0"]:
        parts = parts[1:]
    elif not parts:
        return _reply(start_response, "200 OK", VERSIONS)
    if not parts:
        return _reply(start_response, "200 OK", {"resources": []})
    if method == "DELETE":
        return _reply(start_response, "204 No Content")
    if method != "GET":
        return _reply(start_response, "400 Bad Request",
                      _error("BadRequest", "the minicloud's Neutron API "
                             "stand-in is read-only"))
    resource = parts[-1].split(".")[0]
    if len(parts) == 1:
        # a collection: ports, networks, extensions, security-groups, ...
        return _reply(start_response, "200 OK",
                      {resource.replace("-", "_"): []})
    return _reply(start_response, "404 Not Found",
                  _error("NotFound", "%s not found" % resource))
