"""The FastAPI app: only assembly — settings, database, routers, error format, body limit, static files."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from backend import db
from backend.api.routes import compare, experiments, health, metrics, planner, runs, zoo
from backend.deps import require_token
from backend.limits import BodySizeLimit
from backend.schemas import MetricsCreate
from backend.settings import Settings, get_settings
from slimpipe import __version__
from slimpipe.spec import SpecError

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent.parent / "frontend" / "static"
LOCATIONS = ("body", "query", "path", "header", "cookie")


def field_errors(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    """FastAPI's validation errors as `{"field": "model.name", "message": ...}`, dotted like sweep paths."""
    out = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if not str(p).startswith("function-")]
        if loc and loc[0] in LOCATIONS:
            loc = loc[1:]
        if len(loc) > 1 and loc[0] in ("spec", "sweep"):
            loc = loc[1:]
        message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        if error.get("type") == "missing":
            message = "is required"
        elif error.get("type") == "extra_forbidden":
            message = "is not a known field; remove it or check its spelling"
        out.append({"field": ".".join(loc) or "body", "message": message})
    return out


def spec_error_fields(exc: SpecError) -> list[dict[str, str]]:
    out = []
    for error in exc.errors:
        field = error["field"]
        for prefix in ("spec.", "sweep."):
            field = field.removeprefix(prefix)
        out.append({"field": field, "message": error["message"]})
    return out


def api_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token)])
    for module in (experiments, runs, metrics, compare, planner, zoo):
        router.include_router(module.router)
    return router


def include_pages(app: FastAPI) -> None:
    """The dashboard (backend/pages.py, its own module); the API works without it."""
    try:
        from backend import pages
    except ImportError as exc:
        log.info("dashboard pages not available: %s", exc)
        return
    app.include_router(pages.router)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    # Everything imported by now (FastAPI, pydantic, SQLAlchemy: ~10^5 objects) is permanent. Without this,
    # each full collection rescans it all: 100–150 ms pauses every few 10,000-point reads or ingest batches.
    gc.freeze()
    yield


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        lifespan=lifespan,
        title="slimpipe",
        version=__version__,
        description="Pipeline-parallel training over slow links with compressed stage boundaries.",
    )
    app.state.settings = settings
    app.state.session_factory = db.session_factory(settings.database_url)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": field_errors(list(exc.errors()))}, status_code=422)

    @app.exception_handler(SpecError)
    async def _spec(_: Request, exc: SpecError) -> JSONResponse:
        return JSONResponse({"detail": spec_error_fields(exc)}, status_code=422)

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(api_router())
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    include_pages(app)
    app.openapi = lambda: openapi_schema(app)  # type: ignore[method-assign]
    return app


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the bodies that routes read by hand (metric ingest parses JSON bytes itself)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        extra = MetricsCreate.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(extra.pop("$defs", {}))
        components["MetricsCreate"] = extra
        app.openapi_schema = schema
    return app.openapi_schema


app = create_app()
