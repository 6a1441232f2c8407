"""Small request/response helpers shared by the API handlers.

Everything a client sends is decoded here, strictly, so that a client's
mistake (bytes that are not UTF-8, a body nested past any sane depth, a
number too long to convert) becomes a 400 naming it instead of an
exception deep inside WebOb or the json module, which would be a 500.
"""

import json
import re
import urllib.parse

import webob
import webob.exc
import webob.request
from oslo_serialization import jsonutils

from cs2os_agent.api import errors

CONTEXT_KEY = "cs2os.context"
# Set by app.BodySizeLimit: the limit, for the 413 of a body without a
# Content-Length that turns out too large while it is read.
MAX_BODY_KEY = "cs2os.max_request_body_size"

# No request of /v1 nests deeper than 3 ({"migration": {"networks": {}}});
# json.loads recurses once per level and dies with RecursionError near
# 1000 levels, which a 100 kB body of "[" reaches easily.
MAX_JSON_DEPTH = 32
# Python refuses to convert longer integers (sys.get_int_max_str_digits);
# saying so up front keeps its remedy ("use sys.set_int_max_str_digits")
# out of a client's error.
MAX_INT_DIGITS = 4300
# A list query has 5 parameters; a query of thousands is not a client
# that means well (and each field costs a parse).
MAX_QUERY_FIELDS = 100

_JSON_TOKENS = re.compile(r'[\[\]{}"\\]')


def context(request):
    return request.environ[CONTEXT_KEY]


def _invalid(detail):
    return errors.ApiError(400, detail, "cs2os.InvalidRequest")


def _utf8(raw, what):
    """PEP 3333 hands over undecoded bytes as latin-1 str: the original
    bytes, decoded as UTF-8 or a 400."""
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise _invalid("%s is not UTF-8 once percent-decoded: %s"
                       % (what, _escaped(raw))) from None


def _escaped(raw):
    """``raw`` as the client would have written it: %XX for the bytes
    that are not printable ASCII."""
    return urllib.parse.quote(raw.encode("latin-1", "replace")[:200],
                              safe="/%?=&;,:+@!$'()*[]~")


def path_info(request):
    """The request path, decoded; WebOb's request.path_info raises
    UnicodeDecodeError for e.g. /v1/migrations/%ff."""
    return _utf8(request.environ.get("PATH_INFO", ""), "the path")


def query_params(request):
    """The query string as {name: [values]}, decoded strictly.

    WebOb's request.GET raises UnicodeDecodeError for ?host=%C3, so the
    query is parsed here from the raw bytes instead.
    """
    raw = request.environ.get("QUERY_STRING", "")
    # Raw bytes beyond ASCII (PEP 3333 passes them as latin-1) must be
    # UTF-8; so must each percent-escaped sequence (errors="strict").
    text = _utf8(raw, "the query string")
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True,
                                       encoding="utf-8", errors="strict",
                                       max_num_fields=MAX_QUERY_FIELDS)
    except UnicodeDecodeError:
        raise _invalid("the query string is not UTF-8 once "
                       "percent-decoded: %s" % _escaped(raw)) from None
    except ValueError:
        raise _invalid("the query string has more than %d parameters"
                       % MAX_QUERY_FIELDS) from None
    params = {}
    for name, value in pairs:
        params.setdefault(name, []).append(value)
    return params


def _too_deep(text, limit):
    """Whether brackets outside strings nest deeper than ``limit``.

    One pass over the brackets, quotes and backslashes only, stopping at
    the first level past the limit: cheap for any body the size limit
    lets through.
    """
    depth = 0
    in_string = False
    escaped_at = -1
    for match in _JSON_TOKENS.finditer(text):
        pos, char = match.start(), match.group()
        if pos == escaped_at:
            continue
        if in_string:
            if char == "\\":
                escaped_at = pos + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _parse_int(digits):
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError("a number has more than %d digits" % MAX_INT_DIGITS)
    return int(digits)


def _no_constant(name):
    # Python's json accepts NaN and Infinity; JSON (RFC 8259) does not.
    raise ValueError("%s is not a JSON value" % name)


def _media_type(request):
    """(type, charset) of the Content-Type, lower-cased: media types are
    case-insensitive (RFC 9110), so Application/JSON is JSON too."""
    header = request.environ.get("CONTENT_TYPE", "")
    kind, *params = header.split(";")
    charset = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return kind.strip().lower(), charset


def json_body(request):
    """The request's JSON body; 415, 413 or 400 with the reason otherwise."""
    kind, charset = _media_type(request)
    if kind != "application/json":
        raise errors.ApiError(
            415, "the request body must be application/json, not %s"
            % (kind or "missing"), "cs2os.UnsupportedMediaType")
    if charset not in (None, "utf-8", "utf8"):
        # RFC 8259: JSON between systems is UTF-8, and only UTF-8.
        raise errors.ApiError(
            415, "the request body must be UTF-8 JSON, not charset %s"
            % charset, "cs2os.UnsupportedMediaType")
    try:
        raw = request.body
    except webob.exc.HTTPRequestEntityTooLarge:
        # No Content-Length: oslo's limiter found out while it was read.
        raise errors.ApiError(
            413, "the request body is larger than %s bytes"
            % request.environ.get(MAX_BODY_KEY, "the allowed"),
            "cs2os.RequestEntityTooLarge") from None
    except webob.request.DisconnectionError as exc:
        # Fewer bytes than its Content-Length, then gone: the client's
        # doing (nobody reads this answer; the log should not call it ours).
        raise _invalid("the request body ended early: %s" % exc) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid("the request body is not UTF-8: %s" % exc) from None
    if _too_deep(text, MAX_JSON_DEPTH):
        raise _invalid("the request body nests arrays or objects deeper "
                       "than %d levels" % MAX_JSON_DEPTH)
    try:
        body = json.loads(text, parse_int=_parse_int,
                          parse_constant=_no_constant)
    except ValueError as exc:
        raise _invalid("the request body is not valid JSON: %s"
                       % exc) from None
    try:
        # "\ud800" is valid JSON but no text: it cannot be stored, logged
        # or sent on in UTF-8, so it is refused here, where it came in.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _invalid("the request body has a string that is not "
                       "Unicode text (a lone UTF-16 surrogate %r)"
                       % exc.object[exc.start:exc.end]) from None
    return body


def json_response(status, body):
    resp = webob.Response(status=status, content_type="application/json",
                          charset="utf-8")
    resp.body = jsonutils.dump_as_bytes(body)
    return resp
