"""Default policy rules, registered in code (``oslo.policy.policies``).

Every migration moves a whole VM between clouds and touches the service
credentials of both, so the defaults are admin-only; operators can open
single actions to other roles in policy.yaml
(``oslopolicy-sample-generator --namespace cs2os`` shows them).
"""

from oslo_policy import policy

ADMIN = "role:admin"
MIGRATIONS = "/v1/migrations"
ACTION = MIGRATIONS + "/{migration_id}/action"

_RULES = [
    policy.RuleDefault(
        "admin_api", ADMIN,
        description="Default rule for every cs2os API."),
    policy.DocumentedRuleDefault(
        "cs2os:migration:create", "rule:admin_api",
        "Start migrating a CloudStack VM into this cloud.",
        [{"method": "POST", "path": MIGRATIONS}],
        scope_types=["project"]),
    policy.DocumentedRuleDefault(
        "cs2os:migration:list", "rule:admin_api",
        "List migrations.",
        [{"method": "GET", "path": MIGRATIONS}],
        scope_types=["project"]),
    policy.DocumentedRuleDefault(
        "cs2os:migration:get", "rule:admin_api",
        "Show one migration with its history.",
        [{"method": "GET", "path": MIGRATIONS + "/{migration_id}"}],
        scope_types=["project"]),
    policy.DocumentedRuleDefault(
        "cs2os:migration:cancel", "rule:admin_api",
        "Cancel a migration; what it created is rolled back.",
        [{"method": "POST", "path": ACTION + " (cancel)"}],
        scope_types=["project"]),
    policy.DocumentedRuleDefault(
        "cs2os:migration:retry", "rule:admin_api",
        "Run a failed or cancelled migration again.",
        [{"method": "POST", "path": ACTION + " (retry)"}],
        scope_types=["project"]),
    policy.DocumentedRuleDefault(
        "cs2os:migration:cutover", "rule:admin_api",
        "Let a warm migration held for the operator cut over: the "
        "CloudStack VM is frozen and Nova starts the migrated server.",
        [{"method": "POST", "path": ACTION + " (cutover)"}],
        scope_types=["project"]),
]


def list_rules():
    return _RULES
