"""Tables of cs2os-conductor: one row per migration, plus its history."""

import datetime

import sqlalchemy as sa
from sqlalchemy import orm


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class Base(orm.DeclarativeBase):
    pass


class Migration(Base):
    __tablename__ = "migrations"

    id = sa.Column(sa.String(36), primary_key=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    updated_at = sa.Column(
        sa.DateTime, nullable=False, default=utcnow, onupdate=utcnow
    )
    started_at = sa.Column(sa.DateTime)
    finished_at = sa.Column(sa.DateTime)

    # What was asked for.
    source_ref = sa.Column(sa.String(255), nullable=False)
    mode = sa.Column(sa.String(16), nullable=False, default="cold")
    target_host = sa.Column(sa.String(255))
    flavor = sa.Column(sa.String(255))
    delete_source = sa.Column(sa.Boolean, nullable=False, default=False)
    options = sa.Column(sa.JSON, nullable=False, default=dict)
    # Who asked: the caller's user and project.
    user_id = sa.Column(sa.String(64))
    project_id = sa.Column(sa.String(64))
    request_id = sa.Column(sa.String(64))

    # What was found and done.
    source_vm_id = sa.Column(sa.String(36), index=True)
    source_vm_name = sa.Column(sa.String(255))
    source = sa.Column(sa.JSON, nullable=False, default=dict)
    compute_host = sa.Column(sa.String(255), index=True)
    # The Keystone project the server lands in (its owner's), resolved
    # by the first step; NULL until then.  Its readers may see the
    # migration (API policy).
    target_project_id = sa.Column(sa.String(64), index=True)
    state = sa.Column(sa.String(16), nullable=False, index=True)
    step = sa.Column(sa.String(32), nullable=False)
    resources = sa.Column(sa.JSON, nullable=False, default=dict)
    result = sa.Column(sa.JSON, nullable=False, default=dict)
    error = sa.Column(sa.Text)
    bytes_done = sa.Column(sa.BigInteger, nullable=False, default=0)
    bytes_total = sa.Column(sa.BigInteger, nullable=False, default=0)
    rate_bps = sa.Column(sa.BigInteger, nullable=False, default=0)
    # The step whose copy bytes_done/bytes_total/rate_bps count: the
    # current step's own progress only while they are the same.
    progress_step = sa.Column(sa.String(32))
    # Every byte the migration moved across clouds (template upload, each
    # disk copy, the warm mirror): computed from ``result`` at each of its
    # writes (db/moved.py), right for a failed migration too.  NULL only
    # on a row an older conductor wrote.
    bytes_moved = sa.Column(sa.BigInteger)

    # Which conductor runs it, until when its claim holds, and the claim's
    # generation: every write of a flow names the epoch it claimed with.
    conductor = sa.Column(sa.String(255))
    lease_until = sa.Column(sa.DateTime, index=True)
    lease_epoch = sa.Column(sa.Integer, nullable=False, default=0)

    # The CloudStack VM id while the migration is active (unique), NULL
    # once it is final: one active migration per VM.
    active_source = sa.Column(sa.String(36))
    # The migrated disk is the guest's from here on: never rolled back.
    committed = sa.Column(sa.Boolean, nullable=False, default=False)
    # A client's retry of the same create returns the same migration.
    idempotency_key = sa.Column(sa.String(255))
    # The plan that started it (plans.id; no foreign key: a deleted plan's
    # migrations stay as they were).
    plan_id = sa.Column(sa.String(36), index=True)
    # The slot resource it waits for in validate (flow/admission.py), else
    # NULL: a later VM of its plan that needs the same one lets it go
    # first.
    waiting_for = sa.Column(sa.String(300))

    __table_args__ = (
        sa.Index("ux_migrations_active_source", "active_source",
                 unique=True),
        sa.Index("ux_migrations_idempotency_key", "project_id",
                 "idempotency_key", unique=True),
    )

    events = orm.relationship(
        "MigrationEvent",
        order_by="MigrationEvent.id",
        cascade="all, delete-orphan",
        lazy="selectin",
    )


class MigrationEvent(Base):
    __tablename__ = "migration_events"

    id = sa.Column(sa.Integer, primary_key=True, autoincrement=True)
    migration_id = sa.Column(
        sa.String(36),
        sa.ForeignKey("migrations.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    step = sa.Column(sa.String(32), nullable=False)
    kind = sa.Column(sa.String(16), nullable=False)
    message = sa.Column(sa.Text, nullable=False)


class Slot(Base):
    """One of the places a shared resource has for migrations in flight.

    A resource ("compute:<host>", "kvm:<host>", "pool:<id>", "all") with a
    limit of N has slots 0..N-1; a migration holds at most one of each
    resource it uses.  The primary key makes two conductors that count at
    the same time unable to take the same slot: the limit holds across
    every conductor on the database.  A migration's slots go when it
    reaches a final state (Database.update_migration).
    """

    __tablename__ = "slots"

    resource = sa.Column(sa.String(300), primary_key=True)
    number = sa.Column(sa.Integer, primary_key=True, autoincrement=False)
    migration_id = sa.Column(
        sa.String(36),
        sa.ForeignKey("migrations.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class Plan(Base):
    """A named set of migrations with shared defaults (a fleet's wave).

    ``items``: one dict per VM in plan order: ``vm`` (the ref asked for),
    ``vm_id``, ``vm_name``, ``overrides`` (request fields over
    ``defaults``), ``preflight`` (the last validate's report, cut to its
    findings) and ``migration_id`` once started.
    """

    __tablename__ = "plans"

    id = sa.Column(sa.String(36), primary_key=True)
    name = sa.Column(sa.String(255), nullable=False, index=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    updated_at = sa.Column(
        sa.DateTime, nullable=False, default=utcnow, onupdate=utcnow
    )
    user_id = sa.Column(sa.String(64))
    project_id = sa.Column(sa.String(64), index=True)
    # draft | running | done | cancelled
    state = sa.Column(sa.String(16), nullable=False, index=True)
    defaults = sa.Column(sa.JSON, nullable=False, default=dict)
    # The CloudStack selector the VM list was resolved from, if any.
    selector = sa.Column(sa.JSON)
    items = sa.Column(sa.JSON, nullable=False, default=list)
    # {max_in_flight, max_per_compute_host, max_per_kvm_host,
    # max_per_pool}: caps on the plan's own migrations (NULL: none).
    limits = sa.Column(sa.JSON)


class PlanEvent(Base):
    """What happened to a plan, in order (its event log).

    ``dedupe``: an event recorded by whoever sees it first (a migration's
    end, the plan done) carries a key unique in its plan, so two
    conductors looking at once record it once.
    """

    __tablename__ = "plan_events"

    id = sa.Column(sa.Integer, primary_key=True, autoincrement=True)
    plan_id = sa.Column(
        sa.String(36),
        sa.ForeignKey("plans.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    kind = sa.Column(sa.String(32), nullable=False)
    vm = sa.Column(sa.String(255))
    migration_id = sa.Column(sa.String(36))
    message = sa.Column(sa.Text, nullable=False)
    dedupe = sa.Column(sa.String(100))

    __table_args__ = (
        sa.Index("ux_plan_events_dedupe", "plan_id", "dedupe", unique=True),
    )
