"""Default policy rules, registered in code (``oslo.policy.policies``).

The personas of current OpenStack services (Nova, Ironic): an admin
(role:admin, in whichever project) may do everything; a project's
readers (and members: see PROJECT_READER) may see the migrations that
land in their project, the record's target project, not the project of
the admin who started it.  Starting and steering a migration moves a whole
VM between clouds with the service credentials of both, so create,
cancel, retry and cutover stay admin-only; operators can open single
actions to other roles in policy.yaml (``oslopolicy-sample-generator
--namespace cs2os`` shows them).
"""

from oslo_policy import policy

ADMIN = "role:admin"
# Keystone's bootstrap makes admin imply member and member imply reader
# (implied roles), so role:reader also admits a project's members and
# admins: their tokens carry reader too.
PROJECT_READER = "role:reader and project_id:%(project_id)s"
ADMIN_OR_PROJECT_READER = "rule:admin_api or (%s)" % PROJECT_READER
MIGRATIONS = "/v1/migrations"
ACTION = MIGRATIONS + "/{migration_id}/action"
PLANS = "/v1/plans"
PLAN = PLANS + "/{plan_id}"
PLAN_ACTIONS = ("validate", "start", "cancel", "retry")

_READER_NOTE = (
    " Keystone's implied roles (admin implies member implies reader) "
    "let a project's members and admins pass role:reader.")

# The actions check the migration itself too, as get does.
_ACTION_NOTE = (
    " Checked against the caller's own project (403), then against the "
    "migration's target project (404).")

_RULES = [
    policy.RuleDefault(
        "admin_api", ADMIN,
        description="Default rule for every cs2os API."),
    policy.DocumentedRuleDefault(
        "cs2os:migration:create", "rule:admin_api",
        "Start migrating a CloudStack VM into this cloud; its optional "
        "project (or project_map) field chooses the Keystone project the "
        "server lands in.",
        [{"method": "POST", "path": MIGRATIONS}],
        scope_types=["project"]),
    policy.DocumentedRuleDefault(
        "cs2os:migration:list", ADMIN_OR_PROJECT_READER,
        "List migrations. Checked against the caller's own project: may "
        "this caller list at all. A caller without "
        "cs2os:migration:list:all_projects sees only the migrations whose "
        "target project (the Keystone project their server lands in) is "
        "its token's project." + _READER_NOTE,
        [{"method": "GET", "path": MIGRATIONS}],
        scope_types=["project"]),
    policy.DocumentedRuleDefault(
        "cs2os:migration:list:all_projects", "rule:admin_api",
        "List the migrations of every project, and filter them by target "
        "project (?project=). Without it a caller's list is limited to "
        "its token's project.",
        [{"method": "GET", "path": MIGRATIONS + " (every project)"}],
        scope_types=["project"]),
    policy.DocumentedRuleDefault(
        "cs2os:migration:get", ADMIN_OR_PROJECT_READER,
        "Show one migration with its history. Checked first against the "
        "caller's own project (403 when it fails: this caller may not "
        "show migrations at all), then against the migration's target "
        "project, the Keystone project its server lands in (404 when it "
        "fails: the caller does not learn that the migration exists; "
        "one whose target project is not known yet fails for all but "
        "admins)." + _READER_NOTE,
        [{"method": "GET", "path": MIGRATIONS + "/{migration_id}"}],
        scope_types=["project"]),
    policy.DocumentedRuleDefault(
        "cs2os:migration:show:host_details", "rule:admin_api",
        "See where a migration runs and what it touched: target_host, "
        "compute_host, every resource (the source's storage paths and "
        "hosts among them) and the result's internals (copy paths, "
        "digests, the mirror). Without it a caller sees the outcome: the "
        "server, image and ports, the project, NICs, identity, key pair, "
        "security groups, warnings and rollbacks, as Nova hides a "
        "server's host from non-admins.",
        [{"method": "GET", "path": MIGRATIONS},
         {"method": "GET", "path": MIGRATIONS + "/{migration_id}"}],
        scope_types=["project"]),
    policy.DocumentedRuleDefault(
        "cs2os:migration:cancel", "rule:admin_api",
        "Cancel a migration; what it created is rolled back."
        + _ACTION_NOTE,
        [{"method": "POST", "path": ACTION + " (cancel)"}],
        scope_types=["project"]),
    policy.DocumentedRuleDefault(
        "cs2os:migration:retry", "rule:admin_api",
        "Run a failed or cancelled migration again." + _ACTION_NOTE,
        [{"method": "POST", "path": ACTION + " (retry)"}],
        scope_types=["project"]),
    policy.DocumentedRuleDefault(
        "cs2os:migration:cutover", "rule:admin_api",
        "Let a warm migration held for the operator cut over: the "
        "CloudStack VM is frozen and Nova starts the migrated server."
        + _ACTION_NOTE,
        [{"method": "POST", "path": ACTION + " (cutover)"}],
        scope_types=["project"]),
]

# A plan moves many VMs with the service's credentials: admin-only, all.
_PLAN_RULES = [
    ("create", "Create a plan: a named set of CloudStack VMs (a list, or "
     "a CloudStack selector resolved now) with shared migration defaults.",
     [{"method": "POST", "path": PLANS}]),
    ("list", "List plans.", [{"method": "GET", "path": PLANS}]),
    ("get", "Show a plan: its VMs, their migrations and the counts by "
     "state.", [{"method": "GET", "path": PLAN}]),
    ("delete", "Delete a plan none of whose migrations is active (the "
     "migrations stay).", [{"method": "DELETE", "path": PLAN}]),
    ("validate", "Run the preflight of every VM of a draft plan and "
     "record the findings.",
     [{"method": "POST", "path": PLAN + "/action (validate)"}]),
    ("start", "Start a draft plan: one migration per VM the preflight "
     "found no critical problem with.",
     [{"method": "POST", "path": PLAN + "/action (start)"}]),
    ("cancel", "Cancel a plan and its active migrations.",
     [{"method": "POST", "path": PLAN + "/action (cancel)"}]),
    ("retry", "Retry a plan's failed migrations.",
     [{"method": "POST", "path": PLAN + "/action (retry)"}]),
]
_RULES += [policy.DocumentedRuleDefault(
    "cs2os:plan:%s" % name, "rule:admin_api", description, operations,
    scope_types=["project"]) for name, description, operations in _PLAN_RULES]


def list_rules():
    return _RULES
