"""`slimpipe serve`: migrate the database, run the API and one local worker (restarted if it dies), stop both on Ctrl-C.

Ctrl-C or SIGTERM: the API stops answering, then the worker gets a warm shutdown: it takes no new
run, asks the running one to stop at its next step (it ends `cancelled`, metrics kept, retry to run it
again) and leaves queued runs queued for the next start.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from slimpipe import names

WORKER_STOP_S = 45.0  # the supervisor gives a running run 20 s to stop at its next step


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
        # A session of its own: a terminal's Ctrl-C reaches `serve` only, which stops the worker in order.
        start_new_session=True,
    )


class LocalWorker:
    """The embedded worker, started again (after re-sending the runs whose message it took) if it dies."""

    def __init__(self, queues: list[str], name: str, settings: Any):
        self.queues, self.name, self.settings = queues, name, settings
        self.process = start_worker(queues, name)
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def watch(self, interval_s: float = 1.0) -> None:
        while not self._stopping.wait(interval_s):
            with self._lock:
                if self._stopping.is_set() or self.process.poll() is None:
                    continue
                code = self.process.returncode
                try:
                    resent = requeue_lost_messages(self.settings)
                except Exception as exc:
                    resent = []
                    print(f"slimpipe: could not re-send queued runs: {exc}", file=sys.stderr)
                self.process = start_worker(self.queues, self.name)
                self.restarts += 1
                extra = f"; re-sent runs {resent}" if resent else ""
                print(f"slimpipe: worker exited with code {code}; restarted as pid {self.process.pid}{extra}", flush=True)

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            stop_worker(self.process)


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


def sweep_lost_runs(stop: threading.Event, settings: Any) -> None:
    """Fail `running` runs whose worker stopped heartbeating, re-send queued runs whose message was lost and
    forget write keys older than a day, now and then periodically (half the shorter of the two timeouts, at most a minute)."""
    from backend import crud, reconcile

    interval = max(0.2, min(60.0, settings.heartbeat_timeout_s / 2, settings.requeue_after_s / 2))
    lost_runs = reconcile.LostRuns(settings.heartbeat_timeout_s)
    while True:
        try:
            lost = lost_runs.sweep()
            if lost:
                print(f"slimpipe: runs {lost} failed: worker lost", file=sys.stderr)
            resent = reconcile.resend_lost_runs(settings)
            if resent:
                print(f"slimpipe: re-sent runs {resent}, whose broker messages were lost", file=sys.stderr)
            crud.prune_write_keys()
        except Exception as exc:  # the database or broker went away for a moment; try again next time
            lost_runs.failed(exc)
            print(f"slimpipe: recovery sweep failed: {exc}", file=sys.stderr)
        if stop.wait(interval):
            return


def requeue_lost_messages(settings: Any) -> list[int]:
    """Embedded broker, before the local worker starts: re-send every queued run that has no message.

    A worker killed between taking a message and claiming its run (or a wiped var/broker) leaves a
    run `queued` forever. Re-sending is always safe: the worker's atomic claim skips duplicates.
    """
    from backend import reconcile

    if not settings.is_embedded_broker:
        return []
    return reconcile.resend_lost_runs(settings, older_than_s=0)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from backend import db, runfiles
    from backend.settings import get_settings

    if args.host:
        # The app reads its settings from the environment: the Host allow-list must know this name too.
        os.environ["SLIMPIPE_HOST"] = args.host
        get_settings.cache_clear()
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

    where = db.shown_url(settings.database_url)
    try:
        db.when_reachable(db.migrate, settings.database_start_wait_s, on_wait=lambda exc: print(
            f"slimpipe: waiting up to {settings.database_start_wait_s:g} s for the database at {where} "
            f"({db.first_line(exc)})",
            file=sys.stderr, flush=True))
    except Exception as exc:
        if not db.unreachable(exc):
            raise
        print(f"slimpipe serve: cannot reach the database at {where} ({db.first_line(exc)}); start it, or point "
              "SLIMPIPE_DATABASE_URL at one that runs", file=sys.stderr)
        return 1
    notice = runfiles.legacy_notice(settings)
    if notice:
        print(f"slimpipe: {notice}", flush=True)
    if not args.no_worker:
        resent = requeue_lost_messages(settings)
        if resent:
            print(f"slimpipe: re-queued runs {resent}, whose messages were lost", flush=True)
    stop = threading.Event()
    threading.Thread(target=sweep_lost_runs, args=(stop, settings), daemon=True).start()
    # One name per port: a restarted `serve` recognises (and fails) the runs its previous worker left running.
    worker = None if args.no_worker else LocalWorker(queues, f"serve{port}@%h", settings)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"slimpipe: http://{shown}:{port}  (API /api/v1, docs /docs)", flush=True)
    if worker is not None:
        threading.Thread(target=worker.watch, name="slimpipe-worker-watch", daemon=True).start()
        print(f"slimpipe: worker pid {worker.process.pid} on queues {','.join(queues)}", flush=True)
    try:
        # uvicorn handles Ctrl-C itself, then re-raises it once the server is down.
        uvicorn.Server(uvicorn.Config("backend.main:app", host=host, port=port, log_level="info")).run()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if worker is not None:
            print("slimpipe: stopping the worker (the running run stops at its next step)", flush=True)
            worker.stop()
    print("slimpipe: stopped", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - `slimpipe serve` is the entry point
    parser = argparse.ArgumentParser(prog="slimpipe serve")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
