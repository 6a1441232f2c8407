from oslo_config import cfg

conductor_group = cfg.OptGroup(
    "conductor",
    title="cs2os-conductor options",
    help="Options of the controller-side service that runs migrations.",
)

conductor_opts = [
    cfg.IntOpt(
        "workers",
        default=4,
        min=1,
        help="Migrations one conductor runs at the same time, those "
        "waiting for a slot (max_*) or a cutover window included: each "
        "holds a worker. More stay in state 'queued', unclaimed, and any "
        "conductor on the database with a free worker takes the next one "
        "(every few seconds, at once when one of its own ends). So the "
        "migrations in flight are at most the sum of the conductors' "
        "workers: a conductor whose workers are below a max_* limit says "
        "so in a warning at start.",
    ),
    cfg.IntOpt(
        "max_in_flight",
        default=0,
        min=0,
        help="Migrations in flight at once across every conductor on the "
        "database (0: no limit). A migration past validate waits (state "
        "running, step validate, an event says for what) until one ends.",
    ),
    cfg.IntOpt(
        "max_per_compute_host",
        default=0,
        min=0,
        help="Migrations in flight at once onto one Nova compute host named "
        "in the request (0: no limit); counted across every conductor.",
    ),
    cfg.IntOpt(
        "max_per_kvm_host",
        default=0,
        min=0,
        help="Migrations in flight at once from one CloudStack KVM host (0: "
        "no limit); counted across every conductor.",
    ),
    cfg.IntOpt(
        "max_per_pool",
        default=0,
        min=0,
        help="Migrations in flight at once reading one CloudStack primary "
        "storage pool (0: no limit); counted across every conductor.",
    ),
    cfg.IntOpt(
        "lease_seconds",
        default=120,
        min=10,
        help="A conductor renews its claim on the migrations it runs this "
        "often (a third of it); a migration whose claim has expired (its "
        "conductor died) is taken over and resumed by another conductor.",
    ),
    cfg.IntOpt(
        "wait_timeout",
        default=600,
        min=10,
        help="Seconds to wait for a Nova server or a CloudStack job to "
        "reach the state a step asked for.",
    ),
    cfg.IntOpt(
        "agent_restart_timeout",
        default=300,
        min=0,
        help="Seconds a migration waits for a cs2os-agent that stopped "
        "answering in the middle of a copy, swap or cleanup (restarted, "
        "or the message bus restarted) before it fails and rolls back; "
        "the call is repeated once the agent answers again (those agent "
        "calls finish what an earlier one began). 0 fails at once.",
    ),
    cfg.IntOpt(
        "rollback_attempts",
        default=10,
        min=1,
        help="Passes a rollback makes over its undo steps while one of them "
        "fails (CloudStack or Nova busy, an agent away), one pass per "
        "lease renewal (lease_seconds / 3) with the migration in state "
        "rolling_back; after the last the migration ends failed with an "
        "error naming what is left undone.",
    ),
    cfg.StrOpt(
        "overlay_transport",
        default="path",
        choices=["path", "ssh", "nfs"],
        help="How agents read a CloudStack overlay: 'path' from "
        "<primary_storage_mount>/<pool uuid>/<volume path> on the compute "
        "node, 'ssh' from the CloudStack KVM host running the VM, 'nfs' "
        "straight from the primary storage NFS server.",
    ),
    cfg.StrOpt(
        "image_spool_dir",
        default="/var/lib/cs2os/images",
        help="Where a CloudStack template is staged on its way to Glance "
        "(once per template: later migrations reuse the image).",
    ),
    cfg.StrOpt(
        "primary_storage_mount",
        default="/mnt",
        help="Where CloudStack NFS primary storage pools are mounted on "
        "compute nodes (and on this node, for templates), one directory "
        "per pool uuid, as CloudStack's KVM hosts mount them.",
    ),
    cfg.IntOpt(
        "mirror_max_bandwidth_mbps",
        default=0,
        min=0,
        help="Warm migration: upper bound on the block copy's bulk phase, "
        "in megabits per second (libvirt's block copy bandwidth). Once the "
        "mirror is READY every guest write is copied as it happens, "
        "whatever this says. 0 means unlimited.",
    ),
    cfg.IntOpt(
        "mirror_ready_timeout",
        default=86400,
        min=10,
        help="Warm migration: seconds the block copy may take to reach "
        "READY (every byte of the overlay copied); after that the "
        "migration fails and the CloudStack VM runs on untouched.",
    ),
    cfg.FloatOpt(
        "mirror_poll_interval",
        default=1.0,
        min=0.05,
        help="Warm migration: seconds between two looks at the block job "
        "(progress into the record, failure detection, cutover requests).",
    ),
    cfg.IntOpt(
        "manual_cutover_timeout",
        default=86400,
        min=0,
        help="Warm migration with a manual cutover: seconds a READY mirror "
        "waits for the operator's cutover before the migration fails and "
        "rolls back (every guest write is synchronous meanwhile). 0 waits "
        "for ever.",
    ),
    cfg.StrOpt(
        "metrics_listen",
        default="",
        # address:port, an IPv6 address in brackets: refused at start
        # rather than bound somewhere the operator did not mean.
        regex=r"^$|^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$",
        help="Where this conductor serves Prometheus metrics over HTTP "
        "(GET /metrics), as address:port, e.g. 127.0.0.1:9797 or "
        "[::1]:9797; empty: no metrics endpoint. The figures of "
        "migrations, plans and slots come from the database at each "
        "scrape, so every conductor on the database reports the same "
        "ones; the workers figures are this conductor's. Plain HTTP "
        "without authentication: listen on an address only the "
        "monitoring system reaches.",
    ),
]


def register_opts(conf):
    conf.register_group(conductor_group)
    conf.register_opts(conductor_opts, group=conductor_group)


def list_opts():
    return {conductor_group: conductor_opts}
