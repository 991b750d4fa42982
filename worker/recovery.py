"""Runs whose worker died: fail them with "worker lost" so nothing stays `running` forever; and housekeeping
that the same periodic pass does (lost broker messages, deleted runs' folders, old write keys)."""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from sqlalchemy import select, update

from backend import crud, db, reconcile, runfiles
from backend.models import Run, utcnow
from backend.settings import Settings, get_settings
from slimpipe import names

log = logging.getLogger(__name__)


def fail_runs_of_worker(worker_host: str, started_before: datetime | None = None) -> list[int]:
    """At a worker's start: its name still owns `running` runs only if it died mid-run (kill -9, OOM, power).
    `started_before`: only runs claimed before then (the worker's start), for a pass that comes late, after the
    worker may have claimed runs of its own."""
    with db.session_scope() as session:
        query = select(Run.id).where(Run.status == names.RUNNING, Run.worker_host == worker_host)
        if started_before is not None:
            query = query.where(Run.started_at < started_before)
        lost = list(session.scalars(query))
        if lost:
            session.execute(
                update(Run)
                .where(Run.id.in_(lost), Run.status == names.RUNNING)
                .values(
                    status=names.FAILED,
                    finished_at=utcnow(),
                    error=f"worker lost: {worker_host} restarted while the run was running; retry it",
                )
            )
    return lost


def sweep(
    worker_host: str | None = None,
    lost_runs: reconcile.LostRuns | None = None,
    started_before: datetime | None = None,
) -> list[int]:
    """One recovery pass: this worker's orphans (if named), every run past the heartbeat timeout (through
    `lost_runs`, a periodic sweeper's), then queued runs whose broker message was lost (re-sent; see
    backend.reconcile), then the folders of deleted runs in this host's runs folder (backend.runfiles.prune),
    then write keys older than a day (backend.models.WriteKey).
    Returns the failed runs."""
    settings = get_settings()
    lost = fail_runs_of_worker(worker_host, started_before) if worker_host else []
    lost += lost_runs.sweep() if lost_runs is not None else crud.mark_lost_runs(settings.heartbeat_timeout_s)
    if lost:
        log.warning("marked runs %s failed: worker lost", lost)
    try:
        reconcile.resend_lost_runs(settings)
    except Exception:  # the broker is down right now: the next pass tries again
        log.exception("queue reconciliation failed")
    try:  # folders of runs deleted while the API was on another host, or this worker was down
        runfiles.prune(settings)
    except Exception:
        log.exception("removing deleted runs' folders failed")
    try:
        crud.prune_write_keys()
    except Exception:
        log.exception("forgetting old write keys failed")
    return lost


def sweep_interval(settings: Settings) -> float:
    """Half the shorter of the heartbeat timeout and the re-send time, at most a minute, at least 0.2 s."""
    return max(0.2, min(60.0, settings.heartbeat_timeout_s / 2, settings.requeue_after_s / 2))


def sweep_forever(
    stop: threading.Event, interval_s: float | None = None, orphans_of: tuple[str, datetime] | None = None
) -> None:
    """Sweep every `interval_s` (by default `sweep_interval`) until `stop` is set. `orphans_of`: a worker's
    name and start, whose start-up pass could not reach the database; the first pass that does fails the
    runs that name left running, as the start-up pass would have."""
    interval = interval_s or sweep_interval(get_settings())
    lost_runs = reconcile.LostRuns(get_settings().heartbeat_timeout_s)
    while not stop.wait(interval):
        try:
            host, started = orphans_of or (None, None)
            sweep(host, lost_runs=lost_runs, started_before=started)
            orphans_of = None
        except Exception as exc:  # a database hiccup must not end the sweeping
            lost_runs.failed(exc)
            log.exception("recovery sweep failed")


def start_sweeper(interval_s: float | None = None, orphans_of: tuple[str, datetime] | None = None) -> threading.Event:
    """A daemon thread that sweeps periodically (see `sweep_forever`); set the returned event to stop it."""
    stop = threading.Event()
    args = (stop, interval_s, orphans_of)
    threading.Thread(target=sweep_forever, args=args, name="slimpipe-sweeper", daemon=True).start()
    return stop
