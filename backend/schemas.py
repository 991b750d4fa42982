"""Request and response bodies of /api/v1, one family per entity, as docs/api.md describes them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from slimpipe import names
from slimpipe.jsonsafe import NUL_FREE, DocumentedAsSafeJson
from slimpipe.spec import ExperimentSpec


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


#: Text the databases store as given: no NUL byte (PostgreSQL refuses it in text and JSON).
Text = Annotated[str, Field(pattern=NUL_FREE)]
Tag = Annotated[str, Field(min_length=1, max_length=100, pattern=NUL_FREE)]

# --------------------------------------------------------------------------- errors


class FieldError(BaseModel):
    field: str = Field(description='dotted path of the bad input, e.g. "optim.lr" or "limit"; "body" for the whole body')
    message: str = Field(description="what is wrong and what to send instead")


class ValidationErrors(BaseModel):
    """422: the request was understood but a field is invalid."""

    detail: list[FieldError]


class ErrorMessage(BaseModel):
    """401, 403, 404, 409, 413, 503: one sentence."""

    detail: str


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorMessage, "description": "no such run or experiment"}}


def media(*types: str) -> dict[int | str, dict[str, Any]]:
    """A 200 response documented as text in `types` (downloads, streams)."""
    return {200: {"description": "OK", "content": {t: {"schema": {"type": "string"}} for t in types}}}


#: An event-stream cursor: "<metric id>:<log id>", each 0..2**63-1.
CURSOR = r"^\d{1,19}:\d{1,19}$"

#: One server-sent event of a run's stream (OpenAPI before 3.2: the media type's schema describes each event).
RUN_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["status", "metrics", "log"]},
        "data": {"type": "string", "description": "JSON: the run (status), {points} (metrics) or {lines} (log)"},
        "id": {"type": "string", "pattern": CURSOR, "description": "the cursor to resume after"},
    },
}


# --------------------------------------------------------------------------- experiments


class _DocumentedAsSpec:
    """The OpenAPI schema of an ExperimentSpec for a body field read as a plain mapping.

    The service validates a spec only after applying the sweep to it, so the field stays a dict; clients and
    fuzzers still see every field, type, bound and choice. Rules across fields (a stop condition, stage paths
    that exist in the model, paths inside the data root) are checked on acceptance and answered with 422.
    """

    @classmethod
    def __get_pydantic_json_schema__(cls, _: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return handler(ExperimentSpec.__pydantic_core_schema__)


SpecBody = Annotated[dict[str, Any], _DocumentedAsSpec]

Sweep = dict[Annotated[str, Field(max_length=200)], Annotated[list[Any], Field(max_length=1000), DocumentedAsSafeJson]]


class ExperimentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: SpecBody = Field(description="an ExperimentSpec (docs/guide.md, slimpipe.spec)")
    sweep: Sweep | None = Field(None, description='{"compression.default.backward.topk": [1, 0.5]}')
    queue: Text | None = Field(None, max_length=64, description="cpu | gpu; default gpu when train.device is cuda, else cpu")
    tags: list[Tag] = Field([], max_length=100)


class SpecValidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: SpecBody
    sweep: Sweep | None = None


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
    compression: dict[str, str] = Field(
        {}, description='what each direction sends, e.g. {"forward": "dense", "backward": "top-k 10% · 8-bit"}'
    )

    @model_validator(mode="after")
    def _no_eta_once_ended(self) -> RunSummaryPublic:
        """The live ETA (summary.eta_s, eta_at) belongs to a running run; a run that ended without the
        engine's own summary (a lost worker) may still hold it in SQL."""
        if self.summary and self.status in names.FINAL_STATES:
            self.summary = {k: v for k, v in self.summary.items() if k not in names.LIVE_ONLY_SUMMARY}
        return self


class RunPublic(RunSummaryPublic):
    spec: dict[str, Any]
    traceback: str | None
    notes: str | None = Field(None, description="the researcher's notes on the run (PATCH /runs/{id})")


MAX_NOTES = 20_000


class RunUpdate(BaseModel):
    """What a researcher may change on a run at any time; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    tags: list[Tag] | None = Field(None, max_length=100, description="the run's whole tag list, replacing it")
    add_tags: list[Tag] = Field([], max_length=100, description="tags to add (after `tags`), kept in order, each once")
    remove_tags: list[Tag] = Field([], max_length=100, description="tags to remove (after `add_tags`)")
    notes: Text | None = Field(None, max_length=MAX_NOTES, description='plain text; "" clears them')


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

    step: int = Field(ge=0, le=2**31 - 1)
    name: Text = Field(min_length=1, max_length=200)
    value: float | None = Field(description="NaN and ±Infinity are stored as null (a diverged loss)")
    time: float | None = Field(
        None, ge=0, le=1e11, allow_inf_nan=False, description="seconds since the epoch; default: when the server receives it"
    )


class MetricsCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
    modelled_time_per_batch_s: float | None = None
    speedup: float | None = None
    tags: list[str] = []
    notes: str | None = None


class ComparePublic(BaseModel):
    runs: list[CompareRow]
    baseline_run_id: int | None
    varying_fields: list[str] = Field(description="spec paths whose values differ among the compared runs")
    implied_fields: list[str] = Field(
        [], description="compression.default paths that differ only because compression.preset does (in `differences` too)"
    )


# --------------------------------------------------------------------------- what-if link planner


class WhatIfPublic(BaseModel):
    """A stored run replayed over another link (`slimpipe.timeline.Replay.plan`)."""

    run_id: int
    schedule: str
    bandwidth_mbps: float
    latency_ms: float
    time_per_batch_s: float
    one_device_time_per_batch_s: float
    speedup_vs_one_device: float
    link_time_per_step_s: float
