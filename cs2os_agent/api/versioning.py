"""Microversions on the wire: the request's version, its refusals, and
the headers of every answer (the table itself is common/microversions.py).
"""

from cs2os_agent.api import errors
from cs2os_agent.common import microversions

ENV_KEY = "cs2os.api_version"
HEADER = microversions.HEADER


def negotiate(request):
    """The version ``request`` asks for, kept in its environ; a 400 for a
    malformed header, a 406 naming min and max for one not served."""
    value = request.headers.get(HEADER)
    try:
        version = microversions.from_header(value)
    except microversions.VersionNotAcceptable as exc:
        raise errors.ApiError(406, str(exc),
                              "cs2os.VersionNotAcceptable") from None
    except ValueError as exc:
        raise errors.ApiError(400, "header %s: %s" % (HEADER, exc),
                              "cs2os.InvalidRequest") from None
    request.environ[ENV_KEY] = version
    return version


def version_of(request):
    # A request that skipped negotiate (the version documents) is 1.0.
    return request.environ.get(ENV_KEY, microversions.MIN_VERSION)


def _refusal(request, keys):
    found = microversions.too_new(version_of(request), keys)
    if found is None:
        return None
    key, needed = found
    return "%s needs API version %s (%s: %s); this request is version %s" \
        % (microversions.describe(key), needed, HEADER,
           microversions.header_value(needed), version_of(request))


def require(request, keys):
    """A 400 naming the version the first too-new feature needs."""
    detail = _refusal(request, keys)
    if detail:
        raise errors.ApiError(400, detail, "cs2os.VersionTooOld")


def require_body(request, kind, body):
    require(request, microversions.body_features(kind, body))


def require_route(request, path):
    """A 404 for a route the request's version does not have yet."""
    key = microversions.route_feature(path)
    detail = _refusal(request, [key]) if key else None
    if detail:
        raise errors.ApiError(404, "no resource at %s: %s" % (path, detail),
                              "cs2os.NotFound")


def hidden(request, resource):
    """The answer fields of ``resource`` this request's version lacks."""
    return microversions.hidden(version_of(request), resource)


def trim(request, resource, view):
    """``view`` without the fields the request's version lacks."""
    for name in hidden(request, resource):
        view.pop(name, None)
    return view


def stamp(request, response):
    """The version answered and Vary, on every versioned answer."""
    version = request.environ.get(ENV_KEY)
    if version is not None:
        response.headers[HEADER] = microversions.header_value(version)
    vary = [v.strip() for v in (response.headers.get("Vary") or "")
            .split(",") if v.strip()]
    if HEADER not in vary:
        response.headers["Vary"] = ", ".join(vary + [HEADER])
    return response
