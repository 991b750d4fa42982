"""The one task, `run_experiment(run_id)`: claim the run, train it in a supervised child, record how it ended."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from celery import signals

from backend import crud, db, runfiles
from backend.models import utcnow
from backend.settings import get_settings
from slimpipe import names
from worker import recovery
from worker.celery_app import app
from worker.supervisor import (
    Hooks,
    Launcher,
    Outcome,
    Supervisor,
    forkserver_launcher,
    subprocess_launcher,
    warm_forkserver,
)

log = logging.getLogger(__name__)

START_ENV = "SLIMPIPE_WORKER_START"
#: Set when this worker is shutting down (Ctrl-C, SIGTERM): the running child is stopped.
SHUTDOWN = threading.Event()


def _quietly(fn: Callable[..., Any], default: Any) -> Callable[..., Any]:
    """A hook that logs a database error instead of ending the supervision of a healthy child."""

    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            log.exception("%s failed", getattr(fn, "__name__", fn))
            return default

    return call


def supervise(run_id: int) -> Outcome:
    """Train `run_id` in a child process and return its outcome; the row's final state is up to the caller."""
    settings = get_settings()

    def started(pid: int) -> None:
        crud.append_logs(run_id, [f"training process {pid} started on {socket.gethostname()}"])

    def output(lines: list[str], key: str) -> None:
        crud.append_logs(run_id, [("OUTPUT", line) for line in lines], key=key)

    hooks = Hooks(
        beat=_quietly(lambda: crud.heartbeat(run_id), None),
        cancel_requested=_quietly(lambda: crud.is_cancel_requested(run_id), False),
        output=output,  # lines it cannot store yet come again, under the same key
        started=_quietly(started, None),
        shutdown=SHUTDOWN,
        request_stop=_quietly(lambda: _ask_to_stop(run_id), None),
    )
    heartbeat_s = max(0.5, min(10.0, settings.heartbeat_timeout_s / 4))
    supervisor = Supervisor(run_id, hooks, launcher=launcher(), heartbeat_s=heartbeat_s)
    outcome = supervisor.run()
    if supervisor.unsent_output:  # the database is away at the end: wait for it, as for the final state
        db.when_reachable(lambda: supervisor.unsent_output.send(output), settings.database_outage_s)
    return outcome


def _ask_to_stop(run_id: int) -> None:
    """The cancel flag the training child checks every step (the worker is shutting down)."""
    with db.session_scope() as session:
        run = crud.get_run(session=session, run_id=run_id)
        if run is not None:
            crud.request_cancel(session=session, run=run)


def launcher() -> Launcher:
    """Fork runs from the preloaded forkserver; `SLIMPIPE_WORKER_START=subprocess` starts a fresh interpreter each."""
    if os.environ.get(START_ENV) == "subprocess":
        return subprocess_launcher()
    return forkserver_launcher()


@app.task(name=names.TASK_RUN_EXPERIMENT, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_experiment(self: Any, run_id: int) -> str:
    worker_host = self.request.hostname or socket.gethostname()
    if SHUTDOWN.is_set():
        # Delivered while this worker stops: leave the run queued. Its message is used up, so the queue
        # reconciliation (backend.reconcile) sends it again for the next worker.
        crud.append_logs(run_id, [f"not started: worker {worker_host} was shutting down; the run stays queued"])
        log.info("run %s left queued: shutting down", run_id)
        return "skipped"
    if not crud.claim_run(run_id, worker_host, self.request.id):
        # Cancelled while queued, deleted, or a redelivery of a run another worker has: nothing to do.
        log.info("run %s is not queued any more; skipping", run_id)
        return "skipped"
    log.info("run %s claimed by %s", run_id, worker_host)
    patience_s = get_settings().database_outage_s  # the run's end waits out a database restart
    try:
        outcome = supervise(run_id)
    except BaseException as exc:
        error, trace = f"worker error: {type(exc).__name__}: {exc}", traceback.format_exc()
        db.when_reachable(lambda: crud.finish_run(run_id, names.FAILED, error=error, traceback=trace), patience_s)
        raise
    db.when_reachable(
        lambda: crud.finish_run(run_id, outcome.status, outcome.error, outcome.traceback, outcome.summary), patience_s
    )
    log.info("run %s %s%s", run_id, outcome.status, f": {outcome.error}" if outcome.error else "")
    return outcome.status


@app.task(name=names.TASK_RUN_STAGES, bind=True, acks_late=True)
def run_stages(self: Any, run_id: int, ranks: list[int], world: int, host: str, port: int) -> str:
    """Stages `ranks` of distributed run `run_id`, placed on this worker's queue: start them as processes that
    join rank 0's rendezvous at host:port, and wait until they end (rank 0 reports the run's metrics)."""
    from backend import db
    from slimpipe.spec import parse_spec
    from worker.child import run_dir
    from worker.pipeline.launch import LocalStages

    with db.session_scope() as session:
        run = crud.run_status(session=session, run_id=run_id)
    if run != names.RUNNING:
        log.info("run %s is %s, not running; its stages %s are not started", run_id, run, ranks)
        return "skipped"
    spec_data = crud.run_spec(run_id)
    threads = parse_spec(spec_data).train.threads if spec_data else None
    workdir = run_dir(run_id) / f"stages-{'-'.join(map(str, ranks))}"
    stages = LocalStages(spec_data or {}, ranks, world, host=host, port=port, threads=threads, workdir=workdir,
                         out_dir=workdir)
    worker_host = self.request.hostname or socket.gethostname()
    crud.append_logs(run_id, [f"stages {', '.join(map(str, ranks))} started on {worker_host}"])
    try:
        stages.wait(stop=SHUTDOWN.is_set)
    finally:
        stages.close(grace_s=0.0 if SHUTDOWN.is_set() else 5.0)
    if stages.failure is not None:
        crud.append_logs(run_id, [("ERROR", f"{stages.failure} on {worker_host}")])
        return "failed"
    return "done"


# --------------------------------------------------------------------------- worker lifecycle

_sweeper: threading.Event | None = None


@signals.worker_ready.connect
def _recover_on_start(sender: Any = None, **_: Any) -> None:
    """A fresh worker owns no running run: fail its name's leftovers, sweep stale ones, keep sweeping."""
    global _sweeper
    hostname = getattr(sender, "hostname", None)
    started, orphans_of = utcnow(), None
    try:  # a database restarting with this worker (a host's reboot) is waited for: it holds the orphans
        db.when_reachable(lambda: recovery.sweep(hostname, started_before=started), get_settings().database_start_wait_s)
    except Exception as exc:
        if hostname and db.unreachable(exc):  # the periodic sweep does it once the database answers
            orphans_of = (hostname, started)
            log.warning("the database is unreachable at start (%s); runs %s left running are failed once it answers",
                        db.first_line(exc), hostname)
        else:
            log.exception("recovery sweep at worker start failed")
    try:
        notice = runfiles.legacy_notice()
        if notice:
            log.warning(notice)
    except Exception:
        log.exception("could not look for run folders from before the database id")
    if _sweeper is None:
        _sweeper = recovery.start_sweeper(orphans_of=orphans_of)
    _publish_catalog(hostname or socket.gethostname())
    if os.environ.get(START_ENV) != "subprocess":
        try:
            warm_forkserver()  # imports torch and the engine in the background, once
        except Exception:
            log.exception("could not start the forkserver; runs will start it on demand")


def _publish_catalog(worker: str) -> None:
    """What this worker can build, to SQL, from a process of its own (worker/catalog.py), in the background."""

    def publish() -> None:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "worker.catalog", worker], stdin=subprocess.DEVNULL, capture_output=True, text=True
            )
        except OSError:
            log.exception("could not start the catalog publisher")
            return
        if done.returncode:
            log.error("publishing the catalog failed (exit %s): %s", done.returncode, done.stderr[-2000:])

    threading.Thread(target=publish, name="slimpipe-catalog", daemon=True).start()


@signals.worker_shutting_down.connect
def _stop_training(**_: Any) -> None:
    SHUTDOWN.set()
