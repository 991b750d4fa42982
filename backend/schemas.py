"""Request and response bodies of /api/v1, one family per entity, as docs/api.md describes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --------------------------------------------------------------------------- experiments


class ExperimentCreate(BaseModel):
    spec: dict[str, Any] = Field(description="an ExperimentSpec (see slimpipe.spec)")
    sweep: dict[str, list[Any]] | None = Field(None, description='{"compression.default.backward.topk": [1, 0.5]}')
    queue: str | None = Field(None, description="cpu | gpu; default gpu when train.device is cuda, else cpu")
    tags: list[str] = []


class SpecValidate(BaseModel):
    spec: dict[str, Any]
    sweep: dict[str, list[Any]] | None = None


class SpecValid(BaseModel):
    ok: bool = True
    runs: int


class ExperimentCreated(BaseModel):
    experiment_id: int
    run_ids: list[int]


class ExperimentPublic(_Public):
    id: int
    name: str
    spec: dict[str, Any]
    sweep: dict[str, list[Any]] | None
    tags: list[str]
    created_at: datetime
    run_ids: list[int] = []


class ExperimentsPublic(BaseModel):
    data: list[ExperimentPublic]
    count: int


# --------------------------------------------------------------------------- runs


class RunSummaryPublic(_Public):
    """A run as listed: everything but the spec and the traceback."""

    id: int
    experiment_id: int
    name: str
    sweep_values: dict[str, Any]
    status: str
    queue: str
    worker_host: str | None
    celery_id: str | None
    attempt: int
    retry_of: int | None
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    progress_step: int | None
    progress_total: int | None
    summary: dict[str, Any] | None
    tags: list[str]


class RunPublic(RunSummaryPublic):
    spec: dict[str, Any]
    traceback: str | None


class ChannelDiagnosis(BaseModel):
    boundary: int
    direction: str
    rel_error: float | None = None
    cosine: float | None = None


class DiagnosisPublic(BaseModel):
    """Where compression error enters and what it does to the run (backend/diagnose.py)."""

    channels: list[ChannelDiagnosis]
    worst: ChannelDiagnosis | None
    train_acc: float | None
    val_acc: float | None
    best_val_acc: float | None
    val_acc_dense: float | None
    train_val_gap: float | None
    diverging: bool
    eval_mismatch: float | None
    findings: list[str]
    likely_cause: str


class RunsPublic(BaseModel):
    data: list[RunSummaryPublic]
    count: int


# --------------------------------------------------------------------------- metrics and logs


class MetricPointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=0)
    name: str = Field(min_length=1, max_length=200)
    value: float | None
    time: float | None = Field(None, description="seconds since the epoch; default: when the server receives it")


class MetricsCreate(BaseModel):
    points: list[MetricPointIn]


class MetricsAccepted(BaseModel):
    accepted: int


class Series(BaseModel):
    step: list[int]
    value: list[float | None]
    time: list[float]


class MetricsPublic(BaseModel):
    run_id: int
    series: dict[str, Series]
    last_step: int | None


class LogLinePublic(_Public):
    id: int
    time: datetime
    level: str
    message: str


class LogLinesPublic(BaseModel):
    lines: list[LogLinePublic]


# --------------------------------------------------------------------------- compare


class CompareRow(BaseModel):
    run_id: int
    name: str
    status: str
    differences: dict[str, Any]
    best_val_acc: float | None = None
    final_val_acc: float | None = None
    delta_val_acc: float | None = None
    wire_bytes_per_step: float | None = None
    compression_ratio: float | None = None
    time_per_batch_s: float | None = None
    link_time_per_step_s: float | None = None
    speedup: float | None = None


class ComparePublic(BaseModel):
    runs: list[CompareRow]
    baseline_run_id: int | None
    varying_fields: list[str]
