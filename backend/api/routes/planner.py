"""The what-if link planner: a stored run's time per batch and speed-up vs one device on another link."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from backend.api.routes.runs import get_run_or_404
from backend.deps import RunId, SessionDep
from backend.schemas import WhatIfPublic
from slimpipe.timeline import Replay

router = APIRouter(tags=["planner"])


def _link_error(field: str, value: float, rule: str, example: str) -> HTTPException:
    return HTTPException(422, detail=[{"field": field, "message": f"{value:g} is not {rule}; give e.g. {example}"}])


@router.get("/runs/{run_id}/whatif", response_model=WhatIfPublic)
def what_if(
    run_id: RunId,
    session: SessionDep,
    bandwidth_mbps: Annotated[float, Query(gt=0, le=1e9, allow_inf_nan=False, description="link rate, Mbit/s")],
    latency_ms: Annotated[float, Query(ge=0, le=1e7, allow_inf_nan=False, description="one-way latency, ms")] = 0.0,
) -> WhatIfPublic:
    """Replay the run's stored per-action compute times and per-transfer bytes over this link."""
    if not bandwidth_mbps > 0:
        raise _link_error("bandwidth_mbps", bandwidth_mbps, "a positive rate in Mbit/s", "100 or 0.5")
    if not latency_ms >= 0:
        raise _link_error("latency_ms", latency_ms, "zero or more milliseconds", "1")
    run = get_run_or_404(session, run_id)
    stored = (run.summary or {}).get("replay")
    if not stored:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"run {run_id} has no stored replay (per-action compute times and transfer sizes); only runs "
            "that finished training with this version of slimpipe have one: retry the run to get it",
        )
    replay = Replay.from_json(stored)
    return WhatIfPublic(run_id=run_id, schedule=replay.schedule, **replay.plan(bandwidth_mbps, latency_ms))
