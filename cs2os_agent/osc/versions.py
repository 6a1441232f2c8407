"""Microversion negotiation of the CLI's REST client.

Every request carries ``OpenStack-API-Version: cs2os 1.N``.  N is the
version the user chose (``--os-cs2os-api-version 1.N``), else the newest
this client knows, lowered to the server's maximum once the server has
refused it: a server older than the client answers 406, the client then
reads the server's version document (GET /, once) and speaks min(its own
maximum, the server's maximum) from there on.  A server as new as the
client, the usual case, costs no extra round trip.

What a request needs is read from the same table the server checks
(cs2os_agent/common/microversions.py), so a command using a field the chosen
or the server's version lacks fails here, naming both versions, before
anything is sent.
"""

from osc_lib import exceptions as osc_exc

from cs2os_agent.common import microversions

HEADER = microversions.HEADER
MAJOR = microversions.MIN_VERSION.major


def parse_option(text):
    """``--os-cs2os-api-version``: "1" or "1.latest" negotiate (None),
    "1.N" pins N; CommandError for anything else."""
    text = (text or "").strip()
    # Not a bare "latest": OSC finds the commands by the major version.
    if text in ("", str(MAJOR), "%d.latest" % MAJOR):
        return None
    try:
        version = microversions.Version.parse(text)
    except ValueError:
        raise osc_exc.CommandError(
            "--os-cs2os-api-version %r is not 1, 1.latest or 1.N" % text
        ) from None
    if not microversions.MIN_VERSION <= version <= \
            microversions.MAX_VERSION:
        raise osc_exc.CommandError(
            "--os-cs2os-api-version %s: this client speaks cs2os API "
            "versions %s to %s" % (version, microversions.MIN_VERSION,
                                   microversions.MAX_VERSION))
    return version


class VersionedClient:
    """Mixed into osc.client.Client, which provides ``_send``."""

    def __init__(self, api_version=None):
        self._pinned = api_version
        self.api_version = api_version or microversions.MAX_VERSION
        # The server's (min, max) once its version document was read.
        self.server_versions = None

    def _versioned(self, method, url, body=None):
        """The response to the request, in the version negotiated."""
        features = microversions.request_features(method, url, body)
        self._check(features)
        resp = self._send(method, url, body, self._header())
        if resp.status_code == 406 and self._pinned is None \
                and self.server_versions is None:
            self._negotiate()
            self._check(features)
            resp = self._send(method, url, body, self._header())
        return resp

    def _header(self):
        return {HEADER: microversions.header_value(self.api_version)}

    def _check(self, features):
        found = microversions.too_new(self.api_version, features)
        if found is None:
            return
        key, needed = found
        if self._pinned is not None:
            why = "--os-cs2os-api-version is %s" % (self._pinned,)
        else:
            why = "the server supports versions %s to %s" % \
                self.server_versions
        raise osc_exc.CommandError(
            "This command's %s needs cs2os API version %s, but %s"
            % (microversions.describe(key), needed, why))

    def _negotiate(self):
        """Read the server's version document and settle on
        min(this client's maximum, the server's)."""
        resp = self._send("GET", "/")
        try:
            (v1,) = [v for v in resp.json()["versions"]
                     if v.get("id") == "v%d" % MAJOR]
            low = microversions.Version.parse(v1["min_version"])
            high = microversions.Version.parse(
                v1.get("max_version") or v1["version"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise osc_exc.CommandError(
                "The cs2os API refused version %s (HTTP 406) and its "
                "version document (GET /) names no usable v%d range: %s"
                % (self.api_version, MAJOR, e)) from e
        self.server_versions = (low, high)
        chosen = min(microversions.MAX_VERSION, high)
        if chosen < low:
            raise osc_exc.CommandError(
                "The cs2os API serves versions %s to %s; this client "
                "speaks %s to %s: upgrade the client"
                % (low, high, microversions.MIN_VERSION,
                   microversions.MAX_VERSION))
        self.api_version = chosen
