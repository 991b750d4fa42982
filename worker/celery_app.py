"""The Celery app: broker from settings (Redis, or the embedded filesystem transport), explicit queues.

SQL is the source of truth for runs, so there is no result backend. A worker:
`python -m worker` (queues from `SLIMPIPE_WORKER_QUEUES`), or
`celery -A worker.celery_app worker -Q cpu --pool solo`.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from backend.settings import Settings, get_settings
from slimpipe import names


def celery_config(settings: Settings) -> dict[str, Any]:
    """The whole Celery configuration; the API's producer and the workers use the same one."""
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "broker_transport_options": settings.broker_transport_options(),
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        # Explicit queues only: a task sent to a queue nobody declared is an error, not a new queue.
        # Each is bound as Celery would bind it by default (exchange and routing key = queue name),
        # so a producer configured with nothing but the broker URL routes to the same place.
        "task_queues": [Queue(q, Exchange(q, type="direct"), routing_key=q) for q in names.QUEUES],
        "task_create_missing_queues": False,
        "task_default_queue": names.QUEUE_CPU,
        "task_routes": {names.TASK_RUN_EXPERIMENT: {"queue": names.QUEUE_CPU}},
        # Long work: acknowledge after the run ended, take one message at a time.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
    }
    if settings.is_embedded_broker:
        from backend import embedded_broker

        embedded_broker.register()  # messages appear in the queue folder whole (see the module)
        # The filesystem transport keeps fanout bindings in files that dead workers never clean up;
        # nothing here needs broadcast (cancel goes through SQL), so leave remote control off. The
        # exchange tables still need a folder of their own (the transport's default is ./control).
        config["worker_enable_remote_control"] = False
        config["broker_transport_options"]["control_folder"] = str(settings.broker_dir.resolve() / "control")
    else:
        # An unacknowledged message (its worker died) comes back after this long. Running runs are
        # guarded by `claim_run`, so an early redelivery of a live run is skipped, not run twice.
        config["broker_transport_options"].setdefault("visibility_timeout", 6 * 3600)
    return config


def make_app(settings: Settings | None = None) -> Celery:
    app = Celery("slimpipe", include=["worker.tasks"])
    app.conf.update(celery_config(settings or get_settings()))
    return app


app = make_app()
