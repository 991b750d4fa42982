"""The tables: experiments, runs, metric points (tailed by run, name, step), log lines, and what workers can build."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from slimpipe import names

# Stable constraint names, so migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key for the big tables.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Stored as naive UTC everywhere (SQLite keeps no zone), always read back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the submitted spec, before sweep values
    sweep: Mapped[dict[str, list[Any]] | None] = mapped_column(JSON, nullable=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    runs: Mapped[list[Run]] = relationship(back_populates="experiment", order_by="Run.id", passive_deletes=True)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_status_heartbeat", "status", "heartbeat_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the frozen, validated spec this run trains
    sweep_values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=names.QUEUED, index=True)
    queue: Mapped[str] = mapped_column(String(64), default=names.QUEUE_CPU)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    worker_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    celery_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    retry_of: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    progress_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)  # the researcher's, edited any time

    experiment: Mapped[Experiment] = relationship(back_populates="runs")


class MetricPoint(Base):
    __tablename__ = "metric_points"
    __table_args__ = (Index("ix_metric_points_run_name_step", "run_id", "name", "step"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)  # NULL for NaN/inf, which JSON cannot carry
    time: Mapped[float] = mapped_column(Float)  # seconds since the epoch, as the engine and MLflow log them


class LogLine(Base):
    __tablename__ = "log_lines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="INFO")
    message: Mapped[str] = mapped_column(Text)


class WorkerCatalog(Base):
    """What one worker can build, published when it starts: models (module tree, default stages), datasets, devices."""

    __tablename__ = "worker_catalogs"

    worker: Mapped[str] = mapped_column(String(255), primary_key=True)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    catalog: Mapped[dict[str, Any]] = mapped_column(JSON)


class DatabaseIdentity(Base):
    """One row: a random id made with the schema (migration 0003). Run folders live under it
    (`backend.runfiles`), so two databases sharing a runs folder, or a database made again from empty,
    never read each other's checkpoints."""

    __tablename__ = "database_identity"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeletedRun(Base):
    """A run deleted through the API: workers remove its folder where they find one (`backend.runfiles.prune`).
    Only these go: a folder whose run the database does not know (a restored backup, say) is left alone."""

    __tablename__ = "deleted_runs"

    run_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# The core tables, for the bulk and hot-path statements in crud.
experiments = cast(Table, Experiment.__table__)
runs = cast(Table, Run.__table__)
metric_points = cast(Table, MetricPoint.__table__)
log_lines = cast(Table, LogLine.__table__)


class WriteKey(Base):
    """A write that was stored, by the key its sender gave it (the `Idempotency-Key` header, or the key a worker
    gives each batch): a sender that lost the answer sends the same write again under the same key, and it is
    answered with `result` instead of being stored twice. The key is written in the same transaction as the rows.

    `scope` is what the key was used for (`experiments`, `runs/12/metrics`, `runs/12/logs`, `runs/12/retry`), so
    a key only ever
    matches the same kind of write to the same run. Keys older than `KEEP_S` are pruned by the sweepers."""

    __tablename__ = "write_keys"
    KEEP_S = 24 * 3600.0

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    # A digest of the write (the request body): the same key with another write is refused, not answered
    # with the first one's result. None for the workers' batches, which never change.
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
