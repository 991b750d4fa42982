"""Real Celery workers as subprocesses against a throwaway database and broker, and helpers to drive runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.serve import _worker_dies_with
from slimpipe import names
from slimpipe.spec import dump_spec, expand_sweep

ROOT = Path(__file__).resolve().parents[2]

#: The tiny_mlp/digits spec the tests train: seconds per run on two CPU cores.
TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "model": {"name": "tiny_mlp"},
    "data": {"name": "digits", "batch_size": 32},
    "pipeline": {"balance": 2, "microbatches": 2},
    "optim": {"name": "sgd", "lr": 0.05},
    "train": {"max_steps": 20, "eval_every": 10, "seed": 0, "device": "cpu"},
}


def spec_with(**overrides: Any) -> dict[str, Any]:
    """TINY_SPEC with dotted-path overrides: spec_with(**{"train.max_steps": 5})."""
    from slimpipe.spec import set_path

    data = TINY_SPEC
    for path, value in overrides.items():
        data = set_path(data, path, value)
    return data


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Cluster:
    """One database + broker (the environment of this process), and the workers started on it."""

    env: dict[str, str]
    tmp: Path
    workers: list[Worker] = field(default_factory=list)

    # ------------------------------------------------------------------ workers

    def start_worker(self, name: str = "cpu1@test", queues: str = "cpu") -> Worker:
        worker = Worker(name, queues, self.env, self.tmp / f"{name.split('@')[0]}.log")
        worker.start()
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()

    # ------------------------------------------------------------------ runs

    def submit(
        self,
        spec: dict[str, Any],
        sweep: dict[str, list[Any]] | None = None,
        queue: str = names.QUEUE_CPU,
        send: bool = True,
    ) -> list[int]:
        """What POST /experiments does: commit the rows, then (if `send`) one task per run by name."""
        from backend import crud, db
        from backend.queue import send_run
        from backend.settings import get_settings

        with db.session_scope() as session:
            _, runs = crud.create_experiment(
                session=session,
                name=spec.get("name", "experiment"),
                spec=spec,
                sweep=sweep,
                tags=[],
                runs_to_create=[(values, dump_spec(parsed)) for values, parsed in expand_sweep(spec, sweep)],
                queue=queue,
            )
            run_ids = [r.id for r in runs]
        for run_id in run_ids if send else []:
            send_run(run_id, queue, get_settings())
        return run_ids

    def retry(self, run_id: int) -> int:
        """What POST /runs/{id}/retry does: a new queued run of the same frozen spec, sent by name."""
        from backend import crud, db
        from backend.queue import send_run
        from backend.settings import get_settings

        with db.session_scope() as session:
            retry = crud.create_retry(session=session, run=crud.get_run(session=session, run_id=run_id))
            new_id, queue = retry.id, retry.queue
        send_run(new_id, queue, get_settings())
        return new_id

    def cancel(self, run_id: int) -> None:
        from backend import crud, db

        with db.session_scope() as session:
            crud.request_cancel(session=session, run=crud.get_run(session=session, run_id=run_id))

    def run(self, run_id: int) -> Any:
        from backend import crud, db

        with db.session_scope() as session:
            return crud.get_run(session=session, run_id=run_id)

    def series(self, run_id: int, name: str) -> tuple[list[int], list[float | None]]:
        from backend import crud, db

        with db.session_scope() as session:
            steps, values, _ = crud.read_series(session=session, run_id=run_id, name=name)
        return steps, values

    def logs(self, run_id: int) -> list[str]:
        from backend import crud, db

        with db.session_scope() as session:
            return [line.message for line in crud.read_logs(session=session, run_id=run_id)]

    def wait_status(self, run_id: int, statuses: tuple[str, ...], timeout: float = 120) -> Any:
        return wait_for(
            lambda: (r := self.run(run_id)) is not None and r.status in statuses and r,
            timeout,
            f"run {run_id} to reach {statuses} (now {getattr(self.run(run_id), 'status', None)})",
        )

    def wait_final(self, run_id: int, timeout: float = 120) -> Any:
        return self.wait_status(run_id, names.FINAL_STATES, timeout)

    def child_pid(self, run_id: int, timeout: float = 120) -> int:
        """The training child's pid, from the line the task logs when it starts it."""

        def find() -> int | None:
            for message in self.logs(run_id):
                if message.startswith("training process ") and " started" in message:
                    return int(message.split()[2])
            return None

        return wait_for(find, timeout, f"run {run_id}'s training process to start")


class Worker:
    """`python -m worker` as a subprocess, its output in a log file."""

    def __init__(self, name: str, queues: str, env: dict[str, str], log_path: Path):
        self.name, self.queues, self.env, self.log_path = name, queues, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "--queues", self.queues, "--name", self.name, "--loglevel", "INFO"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_worker_dies_with(os.getpid()),  # a killed pytest leaves no worker behind
        )
        wait_for(
            lambda: f"{self.name} ready." in self.output() or self.proc.poll() is not None, timeout, "worker ready"
        )
        if self.proc.poll() is not None:
            raise AssertionError(f"worker {self.name} exited at start:\n{self.output()}")

    def output(self) -> str:
        with self.log_path.open("rb") as f:
            f.seek(self._offset)
            return f.read().decode("utf-8", "replace")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@contextmanager
def cluster_env(tmp: Path, database_url: str, broker_url: str, **extra: str) -> Iterator[Cluster]:
    """Point this process (the producer) and the workers it starts at one database and broker."""
    from backend import db
    from backend.settings import get_settings

    values = {
        "SLIMPIPE_DATABASE_URL": database_url,
        "SLIMPIPE_BROKER_URL": broker_url,
        "SLIMPIPE_BROKER_DIR": str(tmp / "broker"),
        "SLIMPIPE_RUNS_DIR": str(tmp / "runs"),
        "SLIMPIPE_HEARTBEAT_TIMEOUT_S": "120",
        "SLIMPIPE_PLACEMENT_TIMEOUT_S": "30",
        "SLIMPIPE_WORKER_QUEUES": "cpu",
        # Two workers' children share two cores with the test process: one math thread each, or
        # OpenMP threads spin against each other and a tiny MLP step takes 500 ms instead of 5.
        "OMP_NUM_THREADS": "1",
        **extra,
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    get_settings.cache_clear()
    db.dispose_engines()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cluster = Cluster(env=env, tmp=tmp)
    try:
        db.migrate()
        yield cluster
    finally:
        cluster.stop_all()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
        db.dispose_engines()
