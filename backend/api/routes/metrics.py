"""Metric series (downsampled reads, batch ingest), logs, downloads and the live event stream of a run."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import tarfile
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal

import yaml
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import ValidationError
from pydantic_core import to_json
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from backend import crud, db, runfiles
from backend.api.routes.runs import get_run_or_404
from backend.deps import (
    MAX_CURSOR,
    MAX_ID,
    IdempotencyKey,
    RunId,
    SessionDep,
    SettingsDep,
    mark_replayed,
    replayed_header,
)
from backend.downsample import keep_indices
from backend.jsonbody import StrictJSONRoute
from backend.schemas import (
    CURSOR,
    NOT_FOUND,
    RUN_EVENT,
    LogLinePublic,
    LogLinesPublic,
    MetricsAccepted,
    MetricsCreate,
    MetricsPublic,
    RunSummaryPublic,
    media,
)
from slimpipe import names
from slimpipe.jsonsafe import NUL_FREE

router = APIRouter(tags=["metrics and logs"], route_class=StrictJSONRoute, responses=NOT_FOUND)
#: The event stream alone: it also takes `?token=` (main.py gives it that dependency).
stream_router = APIRouter(tags=["metrics and logs"], route_class=StrictJSONRoute, responses=NOT_FOUND)

SSE_POLL_S = 0.5
SSE_DATABASE_RETRY_S = 2.0  # while the database is unreachable, the stream stays open (pings go on) and tries again
SSE_BATCH = 5000


def attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


@router.get("/runs/{run_id}/metrics", response_model=MetricsPublic)
def read_metrics(
    run_id: RunId,
    session: SessionDep,
    names_: str | None = Query(
        None, alias="names", max_length=10_000, pattern=NUL_FREE, description="comma-separated series names; default all"
    ),
    since_step: int | None = Query(None, ge=-1, le=MAX_ID, description="only points with step > since_step"),
    max_points: int = Query(2000, ge=8, le=1_000_000),
) -> Response:
    """`last_step` is the highest step returned (or `since_step` when nothing is newer): the next `since_step`."""
    run_exists(session, run_id)
    wanted = [n for n in (names_ or "").split(",") if n] or crud.metric_names(session=session, run_id=run_id)
    series: dict[str, Any] = {}
    last_step = since_step
    for name in wanted:
        steps, values, times = crud.read_series(session=session, run_id=run_id, name=name, since_step=since_step)
        if steps:
            last_step = max(steps[-1], last_step if last_step is not None else steps[-1])
        if len(steps) > max_points:
            keep = keep_indices(steps, values, max_points)
            steps, values, times = [steps[i] for i in keep], [values[i] for i in keep], [times[i] for i in keep]
        series[name] = {"step": steps, "value": values, "time": times}
    body = {"run_id": run_id, "series": series, "last_step": last_step}
    # Serialized by pydantic-core directly: 10,000-point lists through the response model cost more than the query.
    return Response(to_json(body), media_type="application/json")


def run_exists(session: SessionDep, run_id: int) -> None:
    if crud.run_status(session=session, run_id=run_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"run {run_id} not found")


@router.get("/runs/{run_id}/metric-names", response_model=list[str])
def read_metric_names(run_id: RunId, session: SessionDep) -> list[str]:
    run_exists(session, run_id)
    return crud.metric_names(session=session, run_id=run_id)


def _store_points(
    request: Request, run_id: int, body: MetricsCreate, key: str | None, fingerprint: str
) -> tuple[int, bool]:
    with request.app.state.session_factory() as session:
        run_exists(session, run_id)
        points = [(p.step, p.name, p.value, p.time) for p in body.points]
        result, replayed = crud.keyed_write(
            session=session,
            scope=crud.metrics_scope(run_id),
            key=key,
            write=lambda: {"accepted": crud.insert_metrics(session=session, run_id=run_id, points=points, validated=True)},
            fingerprint=fingerprint,
            commit=True,
        )
        return int(result["accepted"]), replayed


@router.post(
    "/runs/{run_id}/metrics",
    response_model=MetricsAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=replayed_header(status.HTTP_202_ACCEPTED),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MetricsCreate"}}},
        }
    },
)
async def ingest_metrics(
    run_id: RunId, request: Request, response: Response, idempotency_key: IdempotencyKey = None
) -> MetricsAccepted:
    """Store a batch of points. With an `Idempotency-Key`, a batch sent again (its answer lost) is stored once."""
    # The ingest hot path: the body is validated straight from JSON bytes (one pass in pydantic-core)
    # instead of FastAPI's json.loads followed by validation of the Python objects.
    raw = await request.body()
    try:
        body = MetricsCreate.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    fingerprint = hashlib.sha256(raw).hexdigest()
    accepted, replayed = await run_in_threadpool(_store_points, request, run_id, body, idempotency_key, fingerprint)
    mark_replayed(response, replayed)
    return MetricsAccepted(accepted=accepted)


@router.get(
    "/runs/{run_id}/logs",
    response_class=Response,
    responses={
        200: {
            "description": "the log as text lines (format=text, a download) or as JSON (format=json)",
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/LogLinesPublic"}},
            },
        }
    },
)
def read_logs(
    run_id: RunId,
    session: SessionDep,
    since_id: int = Query(0, ge=0, le=MAX_CURSOR, description="only lines with a larger id"),
    format: Literal["text", "json"] = "text",
) -> Any:
    get_run_or_404(session, run_id)
    lines = crud.read_logs(session=session, run_id=run_id, since_id=since_id)
    if format == "json":
        body = LogLinesPublic(lines=[LogLinePublic.model_validate(line) for line in lines])
        return Response(body.model_dump_json(), media_type="application/json")
    text = "".join(f"{line.time.isoformat()} {line.level} {line.message}\n" for line in lines)
    return PlainTextResponse(text, headers=attachment(f"run-{run_id}.log"))


def _stream_metrics(request: Request, run_id: int, row: Any) -> Iterator[str]:
    with request.app.state.session_factory() as session:
        for step, name, value, at in crud.iter_metrics(session=session, run_id=run_id):
            yield row(step, name, value, at)


@router.get("/runs/{run_id}/metrics.csv", response_class=StreamingResponse, responses=media("text/csv"))
def download_csv(run_id: RunId, request: Request, session: SessionDep) -> StreamingResponse:
    get_run_or_404(session, run_id)

    def row(*fields: Any) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(["" if f is None else f for f in fields])
        return buffer.getvalue()

    def body() -> Iterator[str]:
        yield "step,name,value,time\n"
        yield from _stream_metrics(request, run_id, row)

    return StreamingResponse(body(), media_type="text/csv", headers=attachment(f"run-{run_id}-metrics.csv"))


@router.get("/runs/{run_id}/metrics.jsonl", response_class=StreamingResponse, responses=media("application/x-ndjson"))
def download_jsonl(run_id: RunId, request: Request, session: SessionDep) -> StreamingResponse:
    get_run_or_404(session, run_id)

    def row(step: int, name: str, value: float | None, at: float) -> str:
        return json.dumps({"step": step, "name": name, "value": value, "time": at}) + "\n"

    return StreamingResponse(
        _stream_metrics(request, run_id, row),
        media_type="application/x-ndjson",
        headers=attachment(f"run-{run_id}-metrics.jsonl"),
    )


@router.get("/runs/{run_id}/spec.yaml", response_class=Response, responses=media("application/yaml"))
def download_spec(run_id: RunId, session: SessionDep) -> Response:
    run = get_run_or_404(session, run_id)
    text = yaml.safe_dump(run.spec, sort_keys=False)
    return Response(text, media_type="application/yaml", headers=attachment(f"run-{run_id}-spec.yaml"))


@router.get("/runs/{run_id}/checkpoint.tar", response_class=StreamingResponse, responses=media("application/x-tar"))
def download_checkpoint(run_id: RunId, session: SessionDep, settings: SettingsDep) -> StreamingResponse:
    """The run's latest checkpoint as a tar: `checkpoint.pt` (in-process runs: model, optimizer and codec
    state; `torch.load(...)["model"]` is the model's state dict) and, for a distributed run, each stage's
    `checkpoint.stageK.pt`. Served from this server's runs folder, which `slimpipe serve` shares with its
    worker; workers on other hosts keep theirs."""
    run = get_run_or_404(session, run_id)
    # A run that never started has written nothing: files under its number are an earlier run's leftovers.
    started = run.started_at is not None
    paths = sorted(runfiles.run_dir(run_id, settings, session=session).glob("checkpoint*.pt")) if started else []
    if not paths:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"run {run_id} has no checkpoint on this server: set train.checkpoint_every to save one "
            "(a worker on another host keeps its runs' checkpoints in its own SLIMPIPE_RUNS_DIR)",
        )
    # Opened together, before streaming: a newer checkpoint replaces the files by rename, so these stay one step's.
    files = [path.open("rb") for path in paths]
    return StreamingResponse(
        tar_stream(files), media_type="application/x-tar", headers=attachment(f"run-{run_id}-checkpoint.tar")
    )


def tar_stream(files: Sequence[BinaryIO], chunk: int = 1 << 20) -> Iterator[bytes]:
    """A tar of open files, written as it is read (no copy of a multi-GB checkpoint in memory or on disk)."""
    try:
        for handle in files:
            info = tarfile.TarInfo(Path(handle.name).name)
            stat = os.fstat(handle.fileno())
            info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
            yield info.tobuf(tarfile.PAX_FORMAT)
            left = info.size
            while left > 0 and (data := handle.read(min(chunk, left))):
                left -= len(data)
                yield data
            if left:
                raise OSError(f"{handle.name} shrank while it was sent")
            yield b"\0" * (-info.size % tarfile.BLOCKSIZE)
        yield b"\0" * (2 * tarfile.BLOCKSIZE)
    finally:
        for handle in files:
            handle.close()


# --------------------------------------------------------------------------- live events


def _status_key(run: Any) -> tuple[Any, ...]:
    return (run.status, run.progress_step, run.progress_total, run.error, run.finished_at, json.dumps(run.summary))


def _poll(request: Request, run_id: int, after_metric: int, after_log: int) -> tuple[Any, list[Any], list[Any]]:
    with request.app.state.session_factory() as session:
        run = crud.get_run(session=session, run_id=run_id)
        if run is None:
            return None, [], []
        status_row = RunSummaryPublic.model_validate(run)
        points = crud.metrics_after(session=session, run_id=run_id, after_id=after_metric, limit=SSE_BATCH)
        lines = [
            LogLinePublic.model_validate(x)
            for x in crud.read_logs(session=session, run_id=run_id, since_id=after_log, limit=SSE_BATCH)
        ]
        return status_row, points, lines


def _parse_cursor(value: str | None) -> tuple[int, int]:
    """Event ids are "<last metric point id>:<last log line id>", so a reconnect resumes where it stopped.

    Anything else (or an id past 64 bits) starts from the beginning, as a browser would after losing its place.
    """
    try:
        metric, log = (int(part) for part in (value or "0:0").split(":"))
    except ValueError:
        return 0, 0
    return (metric, log) if 0 <= metric <= MAX_CURSOR and 0 <= log <= MAX_CURSOR else (0, 0)


@stream_router.get("/runs/{run_id}/events", response_class=EventSourceResponse,
                   responses={200: {"description": "OK", "content": {"text/event-stream": {"schema": RUN_EVENT}}}})
async def stream_events(
    run_id: RunId,
    request: Request,
    session: SessionDep,
    last_event_id: str | None = Header(None, max_length=100),
    cursor: str | None = Query(None, pattern=CURSOR, description="resume after this event id, like Last-Event-ID"),
) -> EventSourceResponse:
    get_run_or_404(session, run_id)
    session.close()
    after_metric, after_log = _parse_cursor(cursor or last_event_id)

    async def events() -> AsyncIterator[dict[str, Any]]:
        nonlocal after_metric, after_log
        sent_status: tuple[Any, ...] | None = None
        while True:
            try:
                run, points, lines = await run_in_threadpool(_poll, request, run_id, after_metric, after_log)
            except Exception as exc:
                if not db.unreachable(exc):
                    raise
                await asyncio.sleep(SSE_DATABASE_RETRY_S)  # a restart or failover: nothing to send until it ends
                continue
            if run is None:
                yield {"event": "status", "data": json.dumps({"id": run_id, "status": "deleted"})}
                return
            key = _status_key(run)
            final = run.status in names.FINAL_STATES
            if not final and key != sent_status:
                sent_status = key
                yield {"event": "status", "data": run.model_dump_json(), "id": f"{after_metric}:{after_log}"}
            if points:
                after_metric = points[-1][0]
                data = {"points": [{"step": p[1], "name": p[2], "value": p[3]} for p in points]}
                yield {"event": "metrics", "data": json.dumps(data), "id": f"{after_metric}:{after_log}"}
            if lines:
                after_log = lines[-1].id
                data = {"lines": [json.loads(line.model_dump_json()) for line in lines]}
                yield {"event": "log", "data": json.dumps(data), "id": f"{after_metric}:{after_log}"}
            if final and len(points) < SSE_BATCH and len(lines) < SSE_BATCH:
                # Everything written before the run ended has been sent: the final status closes the stream.
                yield {"event": "status", "data": run.model_dump_json(), "id": f"{after_metric}:{after_log}"}
                return
            if not points and not lines:
                await asyncio.sleep(SSE_POLL_S)

    return EventSourceResponse(events(), ping=15)
