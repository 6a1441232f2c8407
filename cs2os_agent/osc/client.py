"""A small client for the cs2os v1 REST API on a keystoneauth Adapter.

The Adapter takes the token, the endpoint (catalog or override), TLS
settings and request logging from the user's keystoneauth session, so this
module only knows URLs and JSON shapes.  Every failure leaves here as an
``osc_lib.exceptions.CommandError`` whose text is fit to show the user.
"""

import urllib.parse

from keystoneauth1 import adapter
from keystoneauth1 import exceptions as ksa_exc
from osc_lib import exceptions as osc_exc

import cs2os_agent
from cs2os_agent.osc import versions

MIGRATIONS = "/v1/migrations"
PLANS = "/v1/plans"


class ApiError(osc_exc.CommandError):
    """The API answered with an error status (or with nonsense)."""

    def __init__(self, status, detail, code=None, request_id=None):
        self.status = status
        self.detail = detail
        self.code = code
        self.request_id = request_id
        extra = ", ".join(
            x for x in ("HTTP %s" % status, code, request_id) if x
        )
        super().__init__("%s (%s)" % (detail, extra))


class ApiUnreachable(osc_exc.CommandError):
    """No HTTP answer at all: refused, timed out, TLS failure."""


def error_from_response(resp):
    """Build an ApiError from an error response, whatever its body."""
    request_id = resp.headers.get("x-openstack-request-id")
    code = None
    try:
        errors = resp.json()["errors"]
        details = [e.get("detail") or e.get("title") for e in errors]
        detail = "; ".join(d for d in details if d)
        code = errors[0].get("code")
        request_id = errors[0].get("request_id") or request_id
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        detail = None
    if not detail:
        # Not our error shape (a proxy's HTML page, a bare 502): the
        # status and a bounded slice of the text are all there is.
        detail = (resp.text or "").strip()[:500] or resp.reason or "Error"
    return ApiError(resp.status_code, detail, code, request_id)


def member(body, key):
    """``body[key]`` of an API answer, or ApiError saying it is missing."""
    try:
        return body[key]
    except (KeyError, TypeError) as e:
        raise ApiError(200, "No '%s' in the API answer" % key) from e


def item_path(collection, item_id, *rest):
    """The path of one item of ``collection`` (an id is data, never path
    syntax: "../", "?")."""
    return "/".join([collection, urllib.parse.quote(str(item_id), safe="")]
                    + list(rest))


class PlanClient:
    """/v1/plans calls, mixed into Client; each returns the plan's view."""

    @staticmethod
    def _plan(body):
        return member(body, "plan")

    @staticmethod
    def _plan_path(plan_id, *rest):
        return item_path(PLANS, plan_id, *rest)

    def create_plan(self, plan):
        """``plan``: {"name", "defaults", "vms", "selector"}."""
        return self._plan(self._request("POST", PLANS, {"plan": plan}))

    def get_plan(self, plan_id):
        return self._plan(self._request("GET", self._plan_path(plan_id)))

    def list_plans(self, state=None, name=None):
        params = [(k, v) for k, v in (("name", name), ("state", state))
                  if v is not None]
        query = urllib.parse.urlencode(params)
        body = self._request("GET", PLANS + ("?" + query if query else ""))
        if not isinstance(body, dict):
            raise ApiError(200, "Unexpected list answer from the API")
        return body.get("plans") or []

    def delete_plan(self, plan_id):
        # 204: no body to decode.
        self._request("DELETE", self._plan_path(plan_id), decode=False)

    def plan_action(self, plan_id, name):
        """``name``: validate, start, cancel or retry."""
        return self._plan(self._request(
            "POST", self._plan_path(plan_id, "action"), {name: {}}))


class Client(PlanClient, versions.VersionedClient):
    """cs2os v1 API calls; each returns the decoded record(s)."""

    def __init__(self, session, service_type="cs2os", region_name=None,
                 interface=None, endpoint_override=None, api_version=None):
        """``api_version``: a microversion the user chose (a
        microversions.Version), or None to negotiate (osc/versions.py)."""
        versions.VersionedClient.__init__(self, api_version)
        self._adapter = adapter.Adapter(
            session,
            service_type=service_type,
            region_name=region_name,
            # OSC leaves interface unset unless the user chose one.
            interface=interface or "public",
            endpoint_override=endpoint_override,
            additional_headers={"Accept": "application/json"},
            client_name="cs2os-osc",
            client_version=cs2os_agent.__version__,
            # Error bodies carry the detail the user needs; keystoneauth's
            # own HttpError would reduce them to a generic message.
            raise_exc=False,
        )

    def _request(self, method, url, body=None, decode=True):
        resp = self._versioned(method, url, body)
        if resp.status_code >= 400:
            raise error_from_response(resp)
        if not decode:
            return None
        try:
            return resp.json()
        except ValueError as e:
            raise ApiError(resp.status_code,
                           "The cs2os API answered with non-JSON") from e

    def _send(self, method, url, body=None, headers=None):
        """One HTTP exchange; connection failures as CommandErrors."""
        try:
            return self._adapter.request(url, method, json=body,
                                         headers=headers)
        except ksa_exc.EndpointNotFound as e:
            raise osc_exc.CommandError(
                "No cs2os endpoint in the service catalog (%s); set "
                "--os-cs2os-endpoint or OS_CS2OS_ENDPOINT" % e
            ) from e
        except ksa_exc.ConnectionError as e:
            raise ApiUnreachable(
                "Cannot reach the cs2os API: %s" % e
            ) from e

    @staticmethod
    def _one(body):
        return member(body, "migration")

    @staticmethod
    def _path(migration_id, *rest):
        return item_path(MIGRATIONS, migration_id, *rest)

    def create_migration(self, source, host=None, flavor=None, mode=None,
                         delete_source=None, networks=None,
                         drop_unmapped_nics=None, cutover=None,
                         cutover_method=None, project=None,
                         config_drive=None, keep_snapshots=None,
                         dry_run=None, volume_type=None, start_at=None,
                         cutover_window=None, aggregate=None,
                         project_map=None, flavor_map=None,
                         volume_type_map=None, live_fallback=None):
        """POST a migration; only the given optional fields are sent.
        With ``dry_run``: {"dry_run": True, "preflight": report}, and
        nothing was recorded."""
        request = {"source": source}
        optional = {"host": host, "flavor": flavor, "mode": mode,
                    "delete_source": delete_source, "networks": networks,
                    "drop_unmapped_nics": drop_unmapped_nics,
                    "config_drive": config_drive,
                    "keep_snapshots": keep_snapshots,
                    "dry_run": dry_run,
                    "cutover": cutover, "cutover_method": cutover_method,
                    "project": project, "volume_type": volume_type,
                    "start_at": start_at, "cutover_window": cutover_window,
                    "aggregate": aggregate, "project_map": project_map,
                    "flavor_map": flavor_map,
                    "volume_type_map": volume_type_map,
                    "live_fallback": live_fallback}
        request.update({k: v for k, v in optional.items() if v is not None})
        body = self._request("POST", MIGRATIONS, {"migration": request})
        if dry_run:
            return {"dry_run": True, "preflight": member(body, "preflight")}
        return self._one(body)

    def get_migration(self, migration_id):
        return self._one(self._request("GET", self._path(migration_id)))

    def cancel_migration(self, migration_id):
        return self._action(migration_id, "cancel")

    def retry_migration(self, migration_id):
        return self._action(migration_id, "retry")

    def cutover_migration(self, migration_id, method=None):
        return self._action(migration_id, "cutover",
                            {"method": method} if method else {})

    def _action(self, migration_id, name, args=None):
        return self._one(self._request(
            "POST", self._path(migration_id, "action"), {name: args or {}}
        ))

    def list_migrations(self, state=None, source=None, host=None,
                        limit=None, marker=None, project=None):
        """Return migrations matching the filters.

        Without ``limit`` every page is fetched by following ``next``
        links; with it, one page of at most ``limit`` records.
        ``project``: only those landing in this Keystone project (id).
        """
        params = {"state": state, "source": source, "host": host,
                  "project": project, "limit": limit, "marker": marker}
        query = urllib.parse.urlencode(
            [(k, v) for k, v in params.items() if v is not None]
        )
        records = []
        seen = set()
        while True:
            seen.add(query)
            body = self._request(
                "GET", MIGRATIONS + ("?" + query if query else "")
            )
            if not isinstance(body, dict):
                raise ApiError(200, "Unexpected list answer from the API")
            page = body.get("migrations") or []
            records.extend(page)
            query = _next_query(body)
            if limit is not None or not page or query is None:
                return records
            if query in seen:
                raise ApiError(200, "The API repeated a page link: %s"
                               % query)


def _next_query(body):
    """The query string of the ``next`` link, or None.

    Only the query is reused, against our own endpoint: the token must
    not follow a link to another host, and an API behind a proxy may not
    know the URL its clients see.
    """
    for link in body.get("migrations_links") or []:
        if not isinstance(link, dict):
            continue
        if link.get("rel") == "next" and link.get("href"):
            return urllib.parse.urlsplit(link["href"]).query
    return None
