"""Queueing runs on Celery by task name (the API never imports the worker), and revoking them."""

from __future__ import annotations

import logging
import threading
from typing import Any

from backend.settings import Settings, get_settings
from slimpipe import names

log = logging.getLogger(__name__)
_apps: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


class QueueError(RuntimeError):
    """The broker could not take the task."""


def celery_client(settings: Settings) -> Any:
    """A producer-only Celery app for `settings.broker_url` (cached), configured like the worker's."""
    from celery import Celery
    from kombu import Exchange, Queue

    key = (settings.broker_url, str(settings.broker_dir))
    with _lock:
        app = _apps.get(key)
        if app is None:
            if settings.is_embedded_broker:
                from backend import embedded_broker

                embedded_broker.register()  # messages appear in the queue folder whole
            app = Celery("slimpipe-api", broker=settings.broker_url)
            app.conf.update(
                broker_transport_options=settings.broker_transport_options(),
                broker_connection_retry_on_startup=False,
                broker_connection_timeout=3,
                task_serializer="json",
                # The worker's explicit queues: exchange and routing key named after the queue.
                task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in names.QUEUES],
                task_create_missing_queues=False,
            )
            _apps[key] = app
        return app


def send_run(run_id: int, queue: str, settings: Settings | None = None) -> str:
    """Send `run_experiment(run_id)` to `queue`; the run row must already be committed. Returns the task id."""
    settings = settings or get_settings()
    if queue not in names.QUEUES:
        raise QueueError(f"unknown queue {queue!r}; use one of {', '.join(names.QUEUES)}")
    app = celery_client(settings)
    try:
        result = app.send_task(
            names.TASK_RUN_EXPERIMENT,
            args=[run_id],
            queue=queue,
            routing_key=queue,
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.3},
        )
    except Exception as exc:  # kombu raises many kinds: OperationalError, ConnectionError, OSError
        raise QueueError(f"broker {settings.broker_url} did not take the task: {exc}") from exc
    return str(result.id)


def send_stages(run_id: int, queue: str, ranks: list[int], world: int, host: str, port: int,
                settings: Settings | None = None) -> str:
    """Send `run_stages` for a distributed run's stages placed on `queue`, with where to rendezvous."""
    settings = settings or get_settings()
    if queue not in names.QUEUES:
        raise QueueError(f"pipeline.placement: unknown queue {queue!r}; use one of {', '.join(names.QUEUES)}")
    try:
        result = celery_client(settings).send_task(
            names.TASK_RUN_STAGES, args=[run_id, ranks, world, host, port], queue=queue, routing_key=queue, retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.3},
        )
    except Exception as exc:
        raise QueueError(f"broker {settings.broker_url} did not take the stage task: {exc}") from exc
    return str(result.id)


def revoke(celery_id: str | None, settings: Settings | None = None) -> None:
    """Best effort: a revoked task that still reaches a worker finds its run cancelled and does nothing."""
    settings = settings or get_settings()
    if not celery_id or settings.is_embedded_broker:
        # The embedded transport has no broadcast worth using; the run's row already says cancelled.
        return
    try:
        celery_client(settings).control.revoke(celery_id)
    except Exception as exc:
        log.info("could not revoke %s: %s", celery_id, exc)


def broker_reachable(settings: Settings) -> bool:
    try:
        with celery_client(settings).connection_for_write() as connection:
            connection.ensure_connection(max_retries=0, timeout=2)  # one try: readiness must answer fast
        return True
    except Exception:
        return False
