"""Runs: list, read, diagnose, cancel, retry, delete."""

from __future__ import annotations

import shutil
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy.orm import Session

from backend import crud, runfiles, specs
from backend.deps import (
    MAX_ID,
    IdempotencyKey,
    Limit,
    Offset,
    RunId,
    SessionDep,
    SettingsDep,
    mark_replayed,
    replayed_header,
)
from backend.diagnose import CHANNEL, diagnose
from backend.jsonbody import StrictJSONRoute
from backend.models import Run
from backend.queue import QueueError, revoke, send_run
from backend.schemas import DiagnosisPublic, RunPublic, RunsPublic, RunSummaryPublic, RunUpdate
from backend.settings import Settings
from slimpipe import names
from slimpipe.jsonsafe import NUL_FREE

router = APIRouter(tags=["runs"], route_class=StrictJSONRoute)


def get_run_or_404(session: SessionDep, run_id: int) -> Run:
    run = crud.get_run(session=session, run_id=run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"run {run_id} not found")
    return run


MAX_SEARCH = 200


def _derived(run: Run) -> dict[str, Any]:
    """Fields computed from the row rather than stored in it."""
    return {"compression": specs.compression_summary(run.spec)}


def run_public(run: Run) -> RunPublic:
    return RunPublic.model_validate(run).model_copy(update=_derived(run))


@router.get("/runs", response_model=RunsPublic)
def list_runs(
    session: SessionDep,
    status: str | None = Query(None, pattern=f"^({'|'.join(names.RUN_STATES)})$", description="one of the run states"),
    experiment_id: int | None = Query(None, ge=1, le=MAX_ID),
    tag: str | None = Query(None, min_length=1, max_length=100, pattern=NUL_FREE,
                            description="substring of any tag, case-insensitive"),
    q: str | None = Query(None, max_length=200, pattern=NUL_FREE,
                          description="substring of the name, a tag, the notes or the spec (e.g. topk, digits)"),
    sort: str = Query("-id", max_length=64, pattern=rf"^-?({'|'.join(crud.RUN_SORTS)})$", description=f"one of {', '.join(crud.RUN_SORTS)}; prefix - for descending"),
    limit: Limit = 50,
    offset: Offset = 0,
) -> RunsPublic:
    if status is not None and status not in names.RUN_STATES:
        raise HTTPException(422, detail=[{"field": "status", "message": f"use one of {', '.join(names.RUN_STATES)}"}])
    if sort.removeprefix("-") not in crud.RUN_SORTS:
        message = f"unknown sort {sort!r}; use one of {', '.join(crud.RUN_SORTS)}, with - in front for descending"
        raise HTTPException(422, detail=[{"field": "sort", "message": message}])
    for field, text in (("q", q), ("tag", tag)):
        if text is not None and len(text) > MAX_SEARCH:
            message = f"is {len(text)} characters; search with at most {MAX_SEARCH}"
            raise HTTPException(422, detail=[{"field": field, "message": message}])
    rows, count = crud.list_runs(
        session=session,
        status=status,
        experiment_id=experiment_id,
        tag=tag or None,
        search=q or None,
        sort=sort,
        limit=limit,
        offset=offset,
    )
    data = [RunSummaryPublic.model_validate(r).model_copy(update=_derived(r)) for r in rows]
    return RunsPublic(data=data, count=count)


@router.get("/runs/{run_id}", response_model=RunPublic)
def get_run(run_id: RunId, session: SessionDep) -> RunPublic:
    return run_public(get_run_or_404(session, run_id))


@router.get("/runs/{run_id}/diagnose", response_model=DiagnosisPublic)
def diagnose_run(run_id: RunId, session: SessionDep) -> dict:
    """Where compression error enters, train/val divergence, dense vs compressed eval mismatch, likely cause."""
    get_run_or_404(session, run_id)
    wanted = (names.TRAIN_ACC, names.VAL_ACC, names.VAL_ACC_DENSE)
    series = {
        name: crud.read_series(session=session, run_id=run_id, name=name)[:2]
        for name in crud.metric_names(session=session, run_id=run_id)
        if name in wanted or CHANNEL.match(name)
    }
    return diagnose(series)


@router.patch("/runs/{run_id}", response_model=RunPublic)
def update_run(run_id: RunId, body: RunUpdate, session: SessionDep) -> RunPublic:
    """Change a run's tags (the whole list, or tags added and removed) or notes, in any state; fields left out
    stay as they are."""
    run = crud.get_run_for_update(session=session, run_id=run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"run {run_id} not found")
    crud.update_run(
        session=session, run=run, tags=body.tags, notes=body.notes, add_tags=body.add_tags, remove_tags=body.remove_tags
    )
    session.commit()
    session.refresh(run)
    return run_public(run)


@router.post("/runs/{run_id}/cancel", response_model=RunPublic)
def cancel_run(run_id: RunId, session: SessionDep, settings: SettingsDep) -> RunPublic:
    run = get_run_or_404(session, run_id)
    was_queued = run.status == names.QUEUED
    crud.request_cancel(session=session, run=run)
    session.commit()
    if was_queued:
        revoke(run.celery_id, settings)
    session.refresh(run)
    return run_public(run)


@router.post(
    "/runs/{run_id}/retry",
    response_model=RunPublic,
    status_code=status.HTTP_201_CREATED,
    responses=replayed_header(status.HTTP_201_CREATED),
)
def retry_run(
    run_id: RunId, session: SessionDep, settings: SettingsDep, response: Response, idempotency_key: IdempotencyKey = None
) -> RunPublic:
    """A new run of the same frozen spec; it continues from the earlier attempt's last checkpoint where
    the worker that takes it holds one (`train.checkpoint_every`), else it starts from step 0. With an
    `Idempotency-Key`, a retry sent again (its answer lost) is answered with the run it made, as it is now."""
    run = get_run_or_404(session, run_id)
    if run.status not in names.FINAL_STATES:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"run {run_id} is {run.status}; cancel it before retrying")
    scope = crud.retries_scope(run_id)
    made, replayed = crud.keyed_write(
        session=session,
        scope=scope,
        key=idempotency_key,
        write=lambda: {"run_id": crud.create_retry(session=session, run=run).id},
        commit=True,
    )
    retry = get_run_or_404(session, made["run_id"])
    mark_replayed(response, replayed)
    if not replayed:
        queue_runs(session, settings, [retry.id], retry.queue, scope, idempotency_key)
        session.refresh(retry)
    return run_public(retry)


def queue_runs(session: Session, settings: Settings, run_ids: list[int], queue: str, scope: str, key: str | None) -> None:
    """Send new runs to `queue` and commit their task ids. When the broker refuses, the runs fail as `could not
    queue: …`, the write's key is forgotten (sent again, the write queues anew) and the answer is 503."""
    try:
        for run_id in run_ids:
            crud.set_celery_id(session=session, run_id=run_id, celery_id=send_run(run_id, queue, settings))
    except QueueError as exc:
        for run_id in run_ids:
            crud.finish_run(run_id, names.FAILED, error=f"could not queue: {exc}", session=session)
        crud.forget_write(session=session, scope=scope, key=key)
        session.commit()
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    session.commit()


@router.delete("/runs/{run_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_run(run_id: RunId, session: SessionDep, settings: SettingsDep) -> Response:
    run = get_run_or_404(session, run_id)
    if run.status in (names.QUEUED, names.RUNNING):
        crud.request_cancel(session=session, run=run)
        session.commit()
        revoke(run.celery_id, settings)
    crud.delete_run(session=session, run_id=run_id)
    session.commit()
    # Its folder (checkpoints can be gigabytes) where this process shares the workers' runs folder; a
    # retry that continued from it holds hard links of its own. Workers elsewhere keep theirs.
    shutil.rmtree(runfiles.run_dir(run_id, settings, session=session), ignore_errors=True)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
