"""Handlers of /v1/plans: policy first, then the input, then the
conductor (conductor/plans.py), whose plan view is the answer."""

import webob
from oslo_utils import uuidutils

from cs2os_agent.api import errors
from cs2os_agent.api import policies
from cs2os_agent.api import policy
from cs2os_agent.api import schemas
from cs2os_agent.api import versioning
from cs2os_agent.api import wsgi_util


def _rule(name):
    return "cs2os:plan:%s" % name


class PlansController:
    def __init__(self, conductor_api):
        self.conductor = conductor_api

    def _call(self, method, context, *args):
        # A plan error (common/exception.py) arrives as itself and is
        # answered by its code, as the migrations' are.
        return getattr(self.conductor, method)(context, *args)

    @staticmethod
    def _view(request, plan):
        # Without the fields the request's API version does not have.
        return versioning.trim(request, "plan", plan)

    @staticmethod
    def _check_id(plan_id):
        if not uuidutils.is_uuid_like(plan_id):
            raise errors.ApiError(404, "Plan %s not found" % plan_id,
                                  "cs2os.PlanNotFound")

    @staticmethod
    def _url(request, plan_id=None):
        url = request.application_url + "/v1/plans"
        return url + ("/" + plan_id if plan_id else "")

    def create(self, request):
        context = wsgi_util.context(request)
        policy.authorize(context, _rule("create"))
        raw = wsgi_util.json_body(request)
        # The defaults' and overrides' migration fields, and plan fields
        # newer than /v1/plans itself.
        versioning.require_body(request, "plan", raw)
        body = schemas.validate(schemas.CREATE_PLAN, raw)
        plan = self._call("create_plan", context, body["plan"])
        resp = wsgi_util.json_response(201, {"plan": self._view(request,
                                                                plan)})
        resp.location = self._url(request, plan["id"])
        return resp

    def index(self, request):
        context = wsgi_util.context(request)
        policy.authorize(context, _rule("list"))
        filters = schemas.validate_query(wsgi_util.query_params(request),
                                         schemas.PLAN_LIST_QUERY)
        return wsgi_util.json_response(200, {"plans": [
            self._view(request, p)
            for p in self._call("list_plans", context, filters)]})

    def show(self, request, plan_id):
        context = wsgi_util.context(request)
        policy.authorize(context, _rule("get"))
        self._check_id(plan_id)
        return wsgi_util.json_response(200, {"plan": self._view(
            request, self._call("get_plan", context, plan_id))})

    def delete(self, request, plan_id):
        context = wsgi_util.context(request)
        policy.authorize(context, _rule("delete"))
        self._check_id(plan_id)
        self._call("delete_plan", context, plan_id)
        return webob.Response(status=204)

    def action(self, request, plan_id):
        context = wsgi_util.context(request)
        # As for a migration's actions: may the caller do any of them,
        # before the body that says which is read.
        policy.authorize_any(context, [_rule(a)
                                       for a in policies.PLAN_ACTIONS])
        raw = wsgi_util.json_body(request)
        versioning.require_body(request, "plan_action", raw)
        body = schemas.validate(schemas.PLAN_ACTION, raw)
        ((name, _args),) = body.items()
        policy.authorize(context, _rule(name))
        self._check_id(plan_id)
        plan = self._call("%s_plan" % name, context, plan_id)
        return wsgi_util.json_response(202, {"plan": self._view(request,
                                                                plan)})
