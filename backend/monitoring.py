"""Prometheus metrics at `GET /metrics`, as MLflow's `--expose-prometheus` gives them: the requests this
process answered, and the runs and queues as SQL holds them at each scrape (so every API process behind a
load balancer reports the same run figures, and none of them keeps state to lose)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend import crud, db
from backend.models import utcnow
from slimpipe import names

# Request latency buckets: the ingest and read paths answer in milliseconds; a compare of many runs in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RunsCollector(Collector):
    """Runs by status and queue, how long the oldest queued run has waited per queue, and the oldest
    heartbeat of a running run, read from SQL at each scrape; `slimpipe_database_up` 0 when it cannot be."""

    def __init__(self, session_factory: Callable[[], Session]):
        self.session_factory = session_factory

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("slimpipe_database_up", "1 when this scrape could read the database, else 0")
        try:
            with self.session_factory() as session:
                counts, oldest_queued, oldest_beat = crud.run_gauges(session=session)
        except Exception as exc:
            if not db.unreachable(exc):
                raise
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        runs = GaugeMetricFamily("slimpipe_runs", "runs by status and queue", labels=["status", "queue"])
        seen = {(status, queue): n for status, queue, n in counts}
        for queue in sorted({q for _, q in seen} | set(names.QUEUES)):
            for status in names.RUN_STATES:
                runs.add_metric([status, queue], float(seen.get((status, queue), 0)))
        yield runs
        now = utcnow()
        waiting = GaugeMetricFamily(
            "slimpipe_queued_oldest_age_seconds", "how long the oldest queued run has waited, per queue", labels=["queue"]
        )
        for queue, created in oldest_queued:
            waiting.add_metric([queue], _age(now, created))
        yield waiting
        beat = GaugeMetricFamily(
            "slimpipe_running_heartbeat_oldest_age_seconds",
            "the age of the oldest heartbeat of a running run (past the heartbeat timeout it is failed as lost)",
        )
        if oldest_beat is not None:
            beat.add_metric([], _age(now, oldest_beat))
        yield beat


def _age(now: Any, then: Any) -> float:
    return max(0.0, (now - then).total_seconds())


class RequestMetrics:
    """ASGI middleware: each HTTP answer counted by method, route template and status, and timed. Event
    streams are counted but not timed (they last as long as the run)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry):
        self.app = app
        self.answered = Counter(
            "slimpipe_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=registry
        )
        self.seconds = Histogram(
            "slimpipe_http_request_duration_seconds",
            "time to answer an HTTP request, event streams left out",
            ["method", "route"],
            registry=registry,
            buckets=BUCKETS,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, streaming = time.perf_counter(), 500, False

        async def sending(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = dict(message.get("headers") or [])
                streaming = headers.get(b"content-type", b"").startswith(b"text/event-stream")
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = template(scope)
            self.answered.labels(scope["method"], route, str(status)).inc()
            if not streaming:
                self.seconds.labels(scope["method"], route).observe(time.perf_counter() - start)


def template(scope: Scope) -> str:
    """The matched route's template with its router's prefix (/api/v1/runs/{run_id}), never the raw path: one
    series per route. FastAPI keeps an included router's routes without the prefix, so the prefix is what
    the raw path has before the route's own part."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "unmatched"
    try:
        own = getattr(route, "path_format", path).format(**{k: str(v) for k, v in scope.get("path_params", {}).items()})
    except (KeyError, IndexError, ValueError):
        return str(path)
    raw = scope.get("path", "")
    return raw[: len(raw) - len(own)] + path if raw.endswith(own) else str(path)


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
