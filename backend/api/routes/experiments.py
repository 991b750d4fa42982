"""Experiments: submit a spec (and a sweep) → queued runs; list and read them."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, HTTPException, Response, status

from backend import crud, specs
from backend.api.routes.runs import queue_runs
from backend.deps import (
    ExperimentId,
    IdempotencyKey,
    Limit,
    Offset,
    SessionDep,
    SettingsDep,
    mark_replayed,
    replayed_header,
)
from backend.jsonbody import StrictJSONRoute
from backend.schemas import (
    ExperimentCreate,
    ExperimentCreated,
    ExperimentPublic,
    ExperimentsPublic,
    SpecValid,
    SpecValidate,
)
from slimpipe import names
from slimpipe.spec import SpecError

router = APIRouter(tags=["experiments"], route_class=StrictJSONRoute)


@router.post("/specs/validate", response_model=SpecValid)
def validate_spec(body: SpecValidate, session: SessionDep, settings: SettingsDep) -> SpecValid:
    trees = crud.model_trees(session=session)
    return SpecValid(runs=len(specs.expand(body.spec, body.sweep, settings.data_root, trees)))


@router.post(
    "/experiments",
    response_model=ExperimentCreated,
    status_code=status.HTTP_201_CREATED,
    responses=replayed_header(status.HTTP_201_CREATED),
)
def create_experiment(
    body: ExperimentCreate,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ExperimentCreated:
    """Queue one run per sweep point. With an `Idempotency-Key`, a submission sent again (its answer lost)
    is answered with the same experiment and runs instead of queueing them twice."""
    points = specs.expand(body.spec, body.sweep, settings.data_root, crud.model_trees(session=session))
    queue = body.queue or specs.default_queue(body.spec)
    if queue not in names.QUEUES:
        raise SpecError(
            [{"field": "queue", "message": f"unknown queue {queue!r}; use one of {', '.join(names.QUEUES)}"}]
        )
    first = points[0][1]
    tags = list(dict.fromkeys([*body.tags, *first.get("tags", [])]))

    def create() -> dict[str, Any]:
        experiment, runs = crud.create_experiment(
            session=session,
            name=first["name"],
            spec=body.spec,
            sweep=body.sweep,
            tags=tags,
            runs_to_create=points,
            queue=queue,
        )
        return {"experiment_id": experiment.id, "run_ids": [r.id for r in runs]}

    # The rows exist before any worker can receive their ids.
    fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    created, replayed = crud.keyed_write(
        session=session,
        scope=crud.EXPERIMENTS_SCOPE,
        key=idempotency_key,
        write=create,
        fingerprint=fingerprint,
        commit=True,
    )
    mark_replayed(response, replayed)
    if not replayed:  # a replay was queued the first time (or, if the service died in between, by its sweeper)
        queue_runs(session, settings, created["run_ids"], queue, crud.EXPERIMENTS_SCOPE, idempotency_key)
    return ExperimentCreated(**created)


@router.get("/experiments", response_model=ExperimentsPublic)
def list_experiments(session: SessionDep, limit: Limit = 50, offset: Offset = 0) -> ExperimentsPublic:
    rows, count = crud.list_experiments(session=session, limit=limit, offset=offset)
    data = [ExperimentPublic.model_validate(e).model_copy(update={"run_ids": [r.id for r in e.runs]}) for e in rows]
    return ExperimentsPublic(data=data, count=count)


@router.get("/experiments/{experiment_id}", response_model=ExperimentPublic)
def get_experiment(experiment_id: ExperimentId, session: SessionDep) -> ExperimentPublic:
    experiment = crud.get_experiment(session=session, experiment_id=experiment_id)
    if experiment is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"experiment {experiment_id} not found")
    run_ids = crud.experiment_run_ids(session=session, experiment_id=experiment_id)
    return ExperimentPublic.model_validate(experiment).model_copy(update={"run_ids": run_ids})
