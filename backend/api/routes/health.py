"""Liveness and readiness: is the process up; can it reach the database and the broker."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from backend.jsonbody import StrictJSONRoute
from backend.queue import broker_reachable

router = APIRouter(tags=["health"], route_class=StrictJSONRoute)


@router.get("/healthz")
def healthz() -> dict[str, bool]:
    return {"ok": True}


def _database_reachable(request: Request) -> bool:
    try:
        with request.app.state.session_factory() as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    database = await run_in_threadpool(_database_reachable, request)
    broker = await run_in_threadpool(broker_reachable, request.app.state.settings)
    return JSONResponse({"database": database, "broker": broker}, status_code=200 if database and broker else 503)
