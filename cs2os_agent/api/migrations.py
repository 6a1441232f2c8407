"""Handlers of /v1/migrations: check the caller, then the input, then ask
cs2os-conductor, the only writer of migration records.

The caller comes first in every handler: nothing a caller sends is read,
let alone parsed, before policy has said the caller may use the endpoint,
so an unauthorized client cannot make the API work for it (a 100 kB body
of nested brackets costs a 403, not a parse).
"""

import urllib.parse

from oslo_utils import uuidutils

from cs2os_agent.api import errors
from cs2os_agent.api import policy
from cs2os_agent.api import progress
from cs2os_agent.api import schemas
from cs2os_agent.api import versioning
from cs2os_agent.api import wsgi_util
from cs2os_agent.common import exception
from cs2os_agent.common import microversions
from cs2os_agent.common import states
from cs2os_agent.conductor import request as request_schema

# What a caller sees of a record; lease and conductor bookkeeping stay in.
FIELDS = (
    "id", "state", "step", "mode", "source_ref", "source_vm_id",
    "source_vm_name", "target_host", "compute_host", "flavor",
    "delete_source", "bytes_done", "bytes_total", "rate_bps", "error",
    "result", "resources", "committed", "user_id", "project_id",
    "target_project_id", "request_id",
    "created_at", "updated_at", "started_at", "finished_at",
)

ACTIONS = ("cancel", "cutover", "retry")
LIST_ALL = "cs2os:migration:list:all_projects"
HOST_DETAILS = "cs2os:migration:show:host_details"
# What a caller without HOST_DETAILS (a project's reader or member) sees
# of a record: its outcome, not the hosts, storage paths and copy
# internals behind it.
HOST_FIELDS = ("target_host", "compute_host")
PROJECT_RESOURCES = ("server_id", "image_id", "ports")
PROJECT_RESULT = (
    "project", "flavor_chosen_by", "image_reused", "nics", "dropped_nics",
    "identity", "keypair", "security_groups", "warnings", "server_id",
    "rolled_back", "rollback_incomplete", "source_stopped",
    "source_deleted", "source_unmanaged", "committed_failure",
    "internal_snapshots")


def view(record, with_events=True, details=True, hidden=()):
    """``details``: the caller may see HOST_DETAILS; ``hidden``: fields
    the request's API version does not have (common/microversions.py)."""
    body = {name: record.get(name) for name in FIELDS}
    if not details:
        for name in HOST_FIELDS:
            body.pop(name)
        body["resources"] = {k: v for k, v in
                             (record.get("resources") or {}).items()
                             if k in PROJECT_RESOURCES}
        body["result"] = {k: v for k, v in
                          (record.get("result") or {}).items()
                          if k in PROJECT_RESULT}
    # What was asked for beyond the columns (the rest of options is
    # bookkeeping).
    options = record.get("options") or {}
    body["networks"] = options.get("networks") or {}
    body["drop_unmapped_nics"] = bool(options.get("drop_unmapped_nics"))
    body["config_drive"] = bool(options.get("config_drive"))
    body["keep_snapshots"] = bool(options.get("keep_snapshots"))
    # Kept after a fallback switched the mode to warm (result.live_fallback
    # says why).
    body["live_fallback"] = bool(options.get("live_fallback"))
    body["volume_type"] = options.get("volume_type")
    body["start_at"] = options.get("start_at")
    if details:
        # Where the hosts are, as target_host: host details only.
        body["aggregate"] = options.get("aggregate")
    if record.get("mode") == states.WARM:
        body["cutover"] = options.get("cutover") or states.DEFAULT_CUTOVER
        # The operator's cutover action may override the request's.
        body["cutover_method"] = request_schema.effective_cutover_method(
            options)
        body["cutover_requested"] = options.get("cutover_requested")
        body["cutover_window"] = options.get("cutover_window")
    body["progress"] = progress.view(record)
    if with_events:
        body["events"] = record.get("events", [])
    for name in hidden:
        body.pop(name, None)
    return body


def _view(request, record, **kwargs):
    return view(record, details=policy.check(
        wsgi_util.context(request), HOST_DETAILS),
        hidden=versioning.hidden(request, "migration"), **kwargs)


class MigrationsController:
    def __init__(self, conductor_api, max_limit):
        self.conductor = conductor_api
        self.max_limit = max_limit

    def create(self, request):
        context = wsgi_util.context(request)
        policy.authorize(context, "cs2os:migration:create")
        key = schemas.validate_header(request,
                                      schemas.IDEMPOTENCY_KEY_HEADER,
                                      schemas.IDEMPOTENCY_KEY)
        raw = wsgi_util.json_body(request)
        versioning.require(request, (
            ["header.%s" % schemas.IDEMPOTENCY_KEY_HEADER]
            if key is not None else []))
        versioning.require_body(request, "migration", raw)
        body = schemas.validate(schemas.CREATE_MIGRATION, raw)
        wanted = {k: v for k, v in body["migration"].items()
                  if v is not None}
        if key is not None:
            # The conductor answers a repeated key with the migration the
            # first request created, so a client may retry a POST whose
            # answer it lost without starting a second migration.
            wanted["idempotency_key"] = key
        record = self.conductor.create_migration(context, wanted)
        if record.get("dry_run"):
            # A preflight: nothing was recorded, nothing has a location.
            return wsgi_util.json_response(
                200, {"preflight": record["preflight"]})
        resp = wsgi_util.json_response(202, {"migration": _view(
            request, record)})
        resp.location = self._url(request, record["id"])
        return resp

    def index(self, request):
        context = wsgi_util.context(request)
        policy.authorize(context, "cs2os:migration:list")
        every_project = policy.check(context, LIST_ALL)
        params = schemas.validate_query(wsgi_util.query_params(request))
        versioning.require(request, microversions.query_features(
            "migrations", params))
        limit = min(params.pop("limit", self.max_limit), self.max_limit)
        marker = params.pop("marker", None)
        filters = dict(params)
        project = filters.pop("project", None)
        if not every_project:
            project = self._own_project(context, project)
        if project is not None:
            filters["target_project_id"] = project
        try:
            records = self.conductor.list_migrations(
                context, filters, limit=limit, marker=marker)
        except exception.MigrationNotFound:
            raise errors.ApiError(
                400, "marker %s is not a known migration" % marker,
                "cs2os.InvalidMarker") from None
        # Policy and version once for the page, not once per record.
        details = policy.check(context, HOST_DETAILS)
        hidden = versioning.hidden(request, "migration")
        body = {"migrations": [
            view(r, with_events=False, details=details, hidden=hidden)
            for r in records]}
        if len(records) == limit:
            # A full page: there may be more after its last record.
            query = dict(params, limit=limit, marker=records[-1]["id"])
            body["migrations_links"] = [{
                "rel": "next",
                "href": "%s?%s" % (self._url(request),
                                   urllib.parse.urlencode(sorted(
                                       query.items()))),
            }]
        return wsgi_util.json_response(200, body)

    @staticmethod
    def _own_project(context, asked):
        """The only project a caller without LIST_ALL may list: its
        token's.  Asking for another is a 403 rather than a list quietly
        narrowed to the token's project: that would answer another
        question than the one asked, and a script would take the token
        project's migrations (or none) for the other project's."""
        own = context.project_id
        if own is None:
            # No project to narrow to: a filter on None would list the
            # migrations whose target project is not known yet.
            raise errors.ApiError(
                403, "listing migrations without %s needs a "
                "project-scoped token" % LIST_ALL,
                "cs2os.PolicyNotAuthorized")
        if asked is not None and asked != own:
            raise errors.ApiError(
                403, "project %s is not the token's project: listing "
                "another project's migrations needs %s" % (asked, LIST_ALL),
                "cs2os.PolicyNotAuthorized")
        return own

    def show(self, request, migration_id):
        context = wsgi_util.context(request)
        # First "may this caller show migrations at all" (its own
        # project): a 403.  Then the record's own target project.
        policy.authorize(context, "cs2os:migration:get")
        self._check_id(migration_id)
        record = self._get(context, "cs2os:migration:get", migration_id)
        return wsgi_util.json_response(200, {"migration": _view(
            request, record)})

    def _get(self, context, rule, migration_id):
        """The record, if ``context`` may do ``rule`` on it; one of
        another project is "not found", as Nova answers for another
        project's servers: a caller does not learn that it exists."""
        record = self.conductor.get_migration(context, migration_id)
        if not policy.check(context, rule, policy.record_target(record)):
            raise exception.MigrationNotFound(migration_id=migration_id)
        return record

    def action(self, request, migration_id):
        context = wsgi_util.context(request)
        # Which rule applies is in the body, and the body must not be read
        # before policy has spoken: first "may this caller do any action?"
        # (the per-action rules themselves, so a policy.yaml that opens
        # one action still works, and no extra rule to configure), then,
        # with the body parsed, the rule of the action asked for.
        policy.authorize_any(context, ["cs2os:migration:%s" % a
                                       for a in ACTIONS])
        raw = wsgi_util.json_body(request)
        versioning.require_body(request, "migration_action", raw)
        body = schemas.validate(schemas.MIGRATION_ACTION, raw)
        ((name, args),) = body.items()
        rule = "cs2os:migration:%s" % name
        policy.authorize(context, rule)
        self._check_id(migration_id)
        # The migration's target project, as for show.
        self._get(context, rule, migration_id)
        if name == "cancel":
            record = self.conductor.cancel_migration(context, migration_id)
        elif name == "cutover":
            record = self.conductor.cutover_migration(
                context, migration_id, args.get("method"))
        else:
            record = self.conductor.retry_migration(context, migration_id)
        return wsgi_util.json_response(202, {"migration": _view(
            request, record)})

    @staticmethod
    def _check_id(migration_id):
        # Saves a round trip to the conductor for ids that cannot exist.
        if not uuidutils.is_uuid_like(migration_id):
            raise exception.MigrationNotFound(migration_id=migration_id)

    @staticmethod
    def _url(request, migration_id=None):
        url = request.application_url + "/v1/migrations"
        return url + ("/" + migration_id if migration_id else "")
