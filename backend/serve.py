"""`slimpipe serve`: migrate the database, run the API and one local worker, stop both on Ctrl-C."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slimpipe import names

WORKER_STOP_S = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default: $SLIMPIPE_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $SLIMPIPE_PORT or 8000)")
    parser.add_argument("--no-worker", action="store_true", help="API only; workers run elsewhere (production)")
    parser.add_argument("--queues", help="queues the local worker consumes (default: $SLIMPIPE_WORKER_QUEUES or cpu)")


def _worker_dies_with(parent: int) -> Callable[[], None]:
    """For the worker, before exec: SIGTERM (a warm shutdown) when `serve` dies, even by kill -9 (Linux)."""

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # serve died before prctl took effect
                os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def start_worker(queues: list[str], name: str) -> subprocess.Popen[bytes]:
    """The local Celery worker, a child of this process, with the same settings (environment)."""
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "--queues", ",".join(queues), "--name", name],
        preexec_fn=_worker_dies_with(os.getpid()),
    )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (the worker stops its training child and fails the run it had); SIGKILL if it hangs."""
    if worker.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=WORKER_STOP_S)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def sweep_lost_runs(stop: threading.Event, timeout_s: float) -> None:
    """Fail `running` runs whose worker stopped heartbeating, now and every half timeout."""
    from backend import crud

    while True:
        try:
            lost = crud.mark_lost_runs(timeout_s)
            if lost:
                print(f"slimpipe: runs {lost} failed: worker lost", file=sys.stderr)
        except Exception as exc:  # the database went away for a moment; try again next time
            print(f"slimpipe: recovery sweep failed: {exc}", file=sys.stderr)
        if stop.wait(min(60.0, timeout_s / 2)):
            return


def queued_run_ids_in_embedded_broker(broker_dir: Path) -> set[int]:
    """Run ids of the run_experiment messages waiting in the filesystem transport's queue folder."""
    found = set()
    for path in (broker_dir / "queue").glob("*.msg"):
        try:
            message = json.loads(path.read_text())
            if message["headers"]["task"] == names.TASK_RUN_EXPERIMENT:
                args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
                found.add(int(args[0]))
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            continue  # taken by a worker meanwhile, or not ours
    return found


def requeue_lost_messages(settings: Any) -> list[int]:
    """Embedded broker, before the local worker starts: re-send queued runs that have no message.

    A worker killed between taking a message and claiming its run (or a wiped var/broker) leaves a
    run `queued` forever. Re-sending is always safe: the worker's atomic claim skips duplicates.
    """
    from sqlalchemy import select

    from backend import db
    from backend.models import Run
    from backend.queue import send_run

    if not settings.is_embedded_broker:
        return []
    with db.session_scope() as session:
        queued = list(session.execute(select(Run.id, Run.queue).where(Run.status == names.QUEUED)))
    waiting = queued_run_ids_in_embedded_broker(settings.broker_dir.resolve())
    resent = []
    for run_id, queue in queued:
        if run_id not in waiting:
            send_run(run_id, queue, settings)
            resent.append(run_id)
    return resent


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from backend import db
    from backend.settings import get_settings

    settings = get_settings()
    host = args.host or settings.host
    port = args.port or settings.port
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else settings.queues
    unknown = [q for q in queues if q not in names.QUEUES]
    if unknown:
        print(
            f"slimpipe serve: unknown queue {', '.join(unknown)}; choose from {', '.join(names.QUEUES)}",
            file=sys.stderr,
        )
        return 2

    db.migrate()
    if not args.no_worker:
        resent = requeue_lost_messages(settings)
        if resent:
            print(f"slimpipe: re-queued runs {resent}, whose messages were lost", flush=True)
    stop = threading.Event()
    threading.Thread(target=sweep_lost_runs, args=(stop, settings.heartbeat_timeout_s), daemon=True).start()
    # One name per port: a restarted `serve` recognises (and fails) the runs its previous worker left running.
    worker = None if args.no_worker else start_worker(queues, f"serve{port}@%h")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"slimpipe: http://{shown}:{port}  (API /api/v1, docs /docs)", flush=True)
    if worker is not None:
        print(f"slimpipe: worker pid {worker.pid} on queues {','.join(queues)}", flush=True)
    try:
        # uvicorn handles Ctrl-C itself, then re-raises it once the server is down.
        uvicorn.Server(uvicorn.Config("backend.main:app", host=host, port=port, log_level="info")).run()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if worker is not None:
            stop_worker(worker)
    print("slimpipe: stopped", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - `slimpipe serve` is the entry point
    parser = argparse.ArgumentParser(prog="slimpipe serve")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
