"""A requests session that hands requests to a WSGI app in this process.

Unit tests run the real ``cs`` client (signing, envelope, errors) against
the CloudStack stand-in without opening a socket.
"""

import io
import urllib.parse

import requests
from requests import adapters
from requests import structures

BASE_URL = "http://cloudstack.test"


class WSGIAdapter(adapters.BaseAdapter):
    def __init__(self, app):
        super().__init__()
        self.app = app

    def send(self, request, **kwargs):
        url = urllib.parse.urlsplit(request.url)
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        environ = {
            "REQUEST_METHOD": request.method,
            "PATH_INFO": url.path,
            "QUERY_STRING": url.query,
            "SERVER_NAME": url.hostname,
            "SERVER_PORT": str(url.port or 80),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": url.scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        started = {}

        def start_response(status, headers, exc_info=None):
            started.update(status=status, headers=headers)

        content = b"".join(self.app(environ, start_response))
        response = requests.Response()
        code, _, reason = started["status"].partition(" ")
        response.status_code = int(code)
        response.reason = reason
        response.headers = structures.CaseInsensitiveDict(started["headers"])
        response._content = content
        response.encoding = "utf-8"
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


def session_for(app):
    session = requests.Session()
    session.mount(BASE_URL, WSGIAdapter(app))
    return session
