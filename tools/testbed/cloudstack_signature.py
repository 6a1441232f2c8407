"""CloudStack's request signature, as the management server checks it.

From ApiServer.verifyRequest (apache/cloudstack server/.../api/ApiServer.java):
the parameter NAMES, as sent, are sorted with Java's String order (case
sensitive), ``signature`` is left out, each value is encoded with
java.net.URLEncoder (UTF-8) with "+" replaced by "%20", the pairs are
joined with "&", the WHOLE string is lower-cased, HMAC-SHA1 with the secret
key and base64.  (The developer guide says "lower case, then sort": that
gives the same order unless two names differ only where one has a capital.)
With signatureVersion=3 an ``expires`` parameter is required and must lie
in the future.
"""

import base64
import datetime
import hashlib
import hmac

# java.net.URLEncoder leaves these unencoded (and turns space into "+").
_JAVA_SAFE = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*_")


def java_url_encode(value):
    out = []
    for byte in value.encode("utf-8"):
        if byte in _JAVA_SAFE:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append("%%%02X" % byte)
    return "".join(out)


def string_to_sign(params):
    names = sorted(name for name in params if name.lower() != "signature")
    return "&".join(
        "%s=%s" % (name, java_url_encode(params[name]).replace("+", "%20"))
        for name in names
    ).lower()


def sign(params, secret):
    digest = hmac.new(secret.encode("utf-8"),
                      string_to_sign(params).encode("utf-8"),
                      hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _param(params, name):
    for key, value in params.items():
        if key.lower() == name:
            return value
    return None


def check(params, secret_for_key, now=None):
    """The API key's owner if the request is signed right, else None.

    ``secret_for_key`` maps an API key to (owner, secret) or None.
    """
    signature = _param(params, "signature")
    apikey = _param(params, "apikey")
    if signature is None or apikey is None:
        return None
    if _param(params, "signatureversion") == "3":
        expires = _param(params, "expires")
        if expires is None:
            return None
        try:
            # DateUtil.parseTZDateString: yyyy-MM-dd'T'HH:mm:ssZ
            when = datetime.datetime.strptime(expires, "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            return None
        now = now or datetime.datetime.now(datetime.timezone.utc)
        if when < now:
            return None
    found = secret_for_key(apikey)
    if found is None:
        return None
    owner, secret = found
    # Constant time, as ConstantTimeComparator.
    if not hmac.compare_digest(signature.encode(), sign(params, secret)
                               .encode()):
        return None
    return owner
