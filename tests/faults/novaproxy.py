"""A fault-injecting HTTP proxy for the minicloud's APIs (a thread in the
test, on 127.0.0.1, a free port).

It forwards every request to its upstream and hands back the answer,
except for a request a ``Rule`` matches: that one is answered with the
rule's HTTP status (without being forwarded), or, for a rule with a
``hook`` and no status, forwarded after the hook ran (to hold a request
until the test did something).

``rewrite``: (old, new) byte strings replaced in every answer's body: a
proxy in front of Keystone rewrites the service catalog so that the
compute endpoint is the Nova proxy, which is how only the conductor that
authenticates through it is pointed at the faulty Nova (cs2os's
``[openstack]`` section takes keystoneauth's auth and session options,
none of which overrides one service's endpoint).
"""

import http.client
import http.server
import json
import re
import socketserver
import threading
import urllib.parse

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate",
              "proxy-authorization", "te", "trailers", "transfer-encoding",
              "upgrade", "content-length"}


class Rule:
    """``method`` and ``path`` (a regex searched in the path without the
    query), ``body``: a substring the request body must hold; ``status``:
    the answer instead of forwarding; ``count``: how many requests it
    takes (None: all); ``hook(method, path, body)``: run before
    forwarding (no status) or before answering."""

    def __init__(self, method, path, status=None, body=None, count=1,
                 hook=None, name=None):
        self.method = method
        self.path = re.compile(path)
        self.status = status
        self.body = body
        self.count = count
        self.hook = hook
        self.name = name or "%s %s" % (method, path)
        self.fired = []  # (method, path) of the requests it took

    def matches(self, method, path, body):
        if self.count is not None and len(self.fired) >= self.count:
            return False
        if method != self.method or not self.path.search(path):
            return False
        return self.body is None or self.body.encode() in body


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FaultProxy:
    def __init__(self, upstream, rewrite=(), timeout=300):
        parts = urllib.parse.urlsplit(upstream)
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.rewrite = list(rewrite)
        self.timeout = timeout
        self.rules = []
        self.log = []  # (method, path, status answered)
        self.lock = threading.Lock()
        self._server = None
        self._thread = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._server.server_port

    def add(self, rule):
        with self.lock:
            self.rules.append(rule)
        return rule

    def remove(self, rule):
        with self.lock:
            if rule in self.rules:
                self.rules.remove(rule)

    def clear(self):
        with self.lock:
            del self.rules[:]

    def _take(self, method, path, body):
        with self.lock:
            for rule in self.rules:
                if rule.matches(method, path, body):
                    rule.fired.append((method, path))
                    return rule
        return None

    def start(self):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urllib.parse.urlsplit(self.path).path
                rule = proxy._take(self.command, path, body)
                if rule is not None and rule.hook is not None:
                    rule.hook(self.command, path, body)
                if rule is not None and rule.status is not None:
                    data = json.dumps({"computeFault": {
                        "code": rule.status,
                        "message": "injected by the fault suite's proxy "
                                   "(%s)" % rule.name}}).encode()
                    self._send(rule.status, [("Content-Type",
                                              "application/json")], data)
                    proxy.log.append((self.command, path, rule.status))
                    return
                status, headers, data = proxy._forward(
                    self.command, self.path, dict(self.headers.items()),
                    body)
                proxy.log.append((self.command, path, status))
                self._send(status, headers, data)

            def _send(self, status, headers, data):
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = \
                do_HEAD = _handle

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def _forward(self, method, target, headers, body):
        conn = http.client.HTTPConnection(self.upstream_host,
                                          self.upstream_port,
                                          timeout=self.timeout)
        try:
            out = {k: v for k, v in headers.items()
                   if k.lower() not in HOP_BY_HOP}
            # The Host header stays the proxy's: services that build links
            # from it (Nova, Keystone) point them back through the proxy.
            conn.request(method, target, body=body or None, headers=out)
            resp = conn.getresponse()
            data = resp.read()
            for old, new in self.rewrite:
                data = data.replace(old, new)
            keep = [(k, v) for k, v in resp.getheaders()
                    if k.lower() not in HOP_BY_HOP]
            return resp.status, keep, data
        finally:
            conn.close()

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
