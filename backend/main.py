"""The FastAPI app: only assembly — settings, database, routers, error format, body limit, static files."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from sqlalchemy.exc import InterfaceError, OperationalError

from backend import crud, db
from backend.api.routes import compare, experiments, health, metrics, planner, runs, zoo
from backend.deps import require_stream_token, require_token
from backend.limits import BodySizeLimit
from backend.monitoring import RequestMetrics, RunsCollector, exposition
from backend.schemas import ErrorMessage, LogLinesPublic, MetricsCreate, ValidationErrors
from backend.security import CrossSiteGuard, HostGuard, redact_access_log
from backend.settings import Settings, get_settings
from slimpipe import __version__, names
from slimpipe.spec import SpecError

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent.parent / "frontend" / "static"
LOCATIONS = ("body", "query", "path", "header", "cookie")
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:"
)


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
        if error.get("type") == "json_invalid":
            loc, message = [], f"is not valid JSON: {(error.get('ctx') or {}).get('error', message)}"
        elif error.get("type") == "missing":
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
    router = APIRouter(prefix="/api/v1")
    for module in (experiments, runs, metrics, compare, planner, zoo):
        router.include_router(module.router, dependencies=[Depends(require_token)])
    router.include_router(metrics.stream_router, dependencies=[Depends(require_stream_token)])
    return router


def include_pages(app: FastAPI) -> None:
    """The dashboard (backend/pages.py, its own module); the API works without it."""
    try:
        from backend import pages
    except ImportError as exc:
        log.info("dashboard pages not available: %s", exc)
        return
    app.include_router(pages.router)


def include_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc from the installed `fastapi-offline` assets: no CDN, no fonts.

    ReDoc's side menu shows a logo from its CDN; the script is served with that address pointed at the
    local favicon, and a Content-Security-Policy keeps both pages on this host in any case.
    """
    assets = Path(fastapi_offline.__file__).resolve().parent / "static"
    redoc_js = (assets / "redoc.standalone.js").read_bytes().replace(REDOC_LOGO, b"/docs-assets/favicon.png")

    @app.get("/docs-assets/redoc.standalone.js", include_in_schema=False)
    def redoc_script() -> Response:
        return Response(redoc_js, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})

    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")
    same_host = {"Content-Security-Policy": DOCS_CSP}

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )
        page.headers.update(same_host)
        return page

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            redoc_js_url="/docs-assets/redoc.standalone.js",
            redoc_favicon_url="/docs-assets/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(same_host)
        return page


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    # Everything imported by now (FastAPI, pydantic, SQLAlchemy: ~10^5 objects) is permanent. Without this,
    # each full collection rescans it all: 100–150 ms pauses every few 10,000-point reads or ingest batches.
    gc.freeze()
    redact_access_log()  # uvicorn has configured its loggers by now
    yield


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
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

    @app.exception_handler(crud.KeyReused)
    async def _key_reused(_: Request, exc: crud.KeyReused) -> JSONResponse:
        return JSONResponse({"detail": [{"field": names.IDEMPOTENCY_HEADER, "message": str(exc)}]}, status_code=422)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_away(request: Request, exc: Exception) -> JSONResponse:
        # A restart or failover: say so, and when to come back, rather than a bare 500. The driver's
        # message (hosts, ports) goes to the server's log only.
        log.warning("%s %s: the database is unreachable: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": "the database is unreachable right now (restarting?); try again in a few seconds"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    registry = CollectorRegistry()
    registry.register(RunsCollector(app.state.session_factory))
    for standard in (ProcessCollector, PlatformCollector, GCCollector):  # CPU, memory, fds; Python; GC
        standard(registry=registry)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(CrossSiteGuard, enabled=not settings.api_token)
    app.add_middleware(HostGuard, allowed=settings.hosts)  # a foreign Host gets nothing else
    app.add_middleware(RequestMetrics, registry=registry)  # outermost: every answer counted, refusals too

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_token)])
    def prometheus_metrics() -> Response:
        """Prometheus' text format (backend/monitoring.py); behind the API token when one is set."""
        body, content_type = exposition(registry)
        return Response(body, media_type=content_type)

    app.include_router(health.router)
    app.include_router(api_router())
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    include_pages(app)
    include_docs(app)
    app.openapi = lambda: openapi_schema(app)  # type: ignore[method-assign]
    return app


ERROR_RESPONSES = {
    "401": ("missing or wrong API token (only when SLIMPIPE_API_TOKEN is set)", "ErrorMessage"),
    "403": ("cross-site request refused: without a token, send JSON or the X-Slimpipe-Request header", "ErrorMessage"),
    "404": ("no such run or experiment", "ErrorMessage"),
    "409": ("the run is not in a state that allows this", "ErrorMessage"),
    "413": ("request body larger than SLIMPIPE_MAX_BODY_BYTES", "ErrorMessage"),
    "422": ("a field is invalid: one {field, message} per problem", "ValidationErrors"),
    "503": ("the broker or the database is unreachable", "ErrorMessage"),
}


def _document_errors(path: str, method: str, operation: dict[str, Any]) -> None:
    """The error answers an operation can give, in the shapes the handlers really send."""
    responses = operation.setdefault("responses", {})
    codes = {"422"} if operation.get("parameters") or operation.get("requestBody") else set()
    if path.startswith("/api/v1/"):
        codes |= {"401"}
        operation["security"] = [{"bearer": []}, {}]  # {}: no token configured
        if "/events" in path:
            operation["security"].insert(1, {"queryToken": []})
    if method != "get":
        codes |= {"403"}
    if operation.get("requestBody"):
        codes |= {"413"}
    if "{" in path or path.startswith("/api/v1/compare"):
        codes |= {"404"}
    if path.startswith("/api/v1/"):
        codes |= {"503"}  # every operation reads or writes the database
    if path == "/api/v1/runs/{run_id}/retry":
        codes |= {"409"}
    for code in sorted(codes):
        description, model = ERROR_RESPONSES[code]
        ref = {"$ref": f"#/components/schemas/{model}"}
        responses[code] = {"description": description, "content": {"application/json": {"schema": ref}}}


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, made true: our error shapes and codes, the bearer scheme, and the bodies read by hand."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (MetricsCreate, LogLinesPublic, ValidationErrors, ErrorMessage):  # bodies routes reference by hand
            extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(extra.pop("$defs", {}))
            components[model.__name__] = extra
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "SLIMPIPE_API_TOKEN, when set"},
            "queryToken": {"type": "apiKey", "in": "query", "name": "token", "description": "the event stream only"},
        }
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                _document_errors(path, method, operation)
        schema["paths"].get("/readyz", {}).get("get", {}).setdefault("responses", {})["503"] = {
            "description": "the database or the broker is unreachable",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
        app.openapi_schema = schema
    return app.openapi_schema


app = create_app()
