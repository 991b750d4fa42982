"""`slimpipe serve`: API and one local Celery worker from one command, both gone cleanly after Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from slimpipe import names
from tests.fixtures_servers import free_port
from tests.worker.celery_harness import ROOT, spec_with, wait_for
from worker.supervisor import SHUTDOWN_REASON

pytestmark = pytest.mark.slow


def serve_env(tmp_path) -> dict[str, str]:
    env = {
        **os.environ,
        "SLIMPIPE_DATABASE_URL": f"sqlite:///{tmp_path / 'slimpipe.db'}",
        "SLIMPIPE_BROKER_URL": "filesystem://",
        "SLIMPIPE_BROKER_DIR": str(tmp_path / "broker"),
        "SLIMPIPE_RUNS_DIR": str(tmp_path / "runs"),
        "SLIMPIPE_API_TOKEN": "",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("SLIMPIPE_API_TOKEN")
    return env


def test_serve_runs_a_submitted_run_and_stops_api_worker_and_training_on_ctrl_c(tmp_path):
    port = free_port()
    env = serve_env(tmp_path)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "backend.serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as in a terminal: Ctrl-C goes to the whole group
        )
    url = f"http://127.0.0.1:{port}"
    try:
        api = httpx.Client(base_url=url, timeout=10, headers={names.CSRF_HEADER: "1"})

        def up() -> bool:
            try:
                return api.get("/healthz").json() == {"ok": True}
            except httpx.HTTPError:
                assert serve.poll() is None, log.read_text()
                return False

        wait_for(up, 60, "slimpipe serve to answer /healthz")
        printed = log.read_text()
        assert f"slimpipe: http://127.0.0.1:{port}" in printed
        worker_pid = int(re.search(r"worker pid (\d+) on queues cpu", printed).group(1))
        assert api.get("/readyz").json() == {"database": True, "broker": True}

        # A run goes through the local worker.
        created = api.post("/api/v1/experiments", json={"spec": spec_with(**{"train.max_steps": 6})})
        assert created.status_code == 201, created.text
        (run_id,) = created.json()["run_ids"]
        run = wait_for(
            lambda: (r := api.get(f"/api/v1/runs/{run_id}").json())["status"] in names.FINAL_STATES and r,
            120,
            "the run",
        )
        assert run["status"] == names.SUCCEEDED, run["error"]
        assert run["worker_host"].startswith(f"serve{port}@")
        series = api.get(f"/api/v1/runs/{run_id}/metrics", params={"names": names.TRAIN_LOSS}).json()["series"]
        assert series[names.TRAIN_LOSS]["step"] == list(range(1, 7))

        # Ctrl-C while a run trains and another waits: the first stops cleanly, the second stays queued.
        long = api.post("/api/v1/experiments", json={"spec": spec_with(**{"train.max_steps": 100_000})}).json()
        (long_id,) = long["run_ids"]
        wait_for(
            lambda: (api.get(f"/api/v1/runs/{long_id}").json()["progress_step"] or 0) >= 2, 60, "the long run to train"
        )
        (queued_id,) = api.post("/api/v1/experiments", json={"spec": spec_with()}).json()["run_ids"]
        t0 = time.monotonic()
        os.killpg(serve.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
        assert serve.wait(timeout=90) == 0
        print(f"Ctrl-C: serve, its worker and the run stopped in {time.monotonic() - t0:.1f} s")
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)

    from backend import crud, db

    with db.session_scope(env["SLIMPIPE_DATABASE_URL"]) as session:
        run = crud.get_run(session=session, run_id=long_id)
        assert (run.status, run.error) == (names.CANCELLED, SHUTDOWN_REASON)
        assert run.progress_step >= 2
        assert crud.read_series(session=session, run_id=long_id, name=names.TRAIN_LOSS)[0][:2] == [1, 2]  # kept
        queued = crud.get_run(session=session, run_id=queued_id)
        assert (queued.status, queued.started_at) == (names.QUEUED, None)
    db.dispose_engines()


def test_serve_restarts_its_worker_when_it_dies_and_queued_runs_still_run(tmp_path):
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "backend.serve", "--port", str(port)],
            cwd=tmp_path,
            env=serve_env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        first = int(wait_for(lambda: re.search(r"worker pid (\d+)", log.read_text()), 60, "the worker").group(1))
        wait_for(lambda: "ready." in log.read_text(), 60, "the worker to be ready")
        os.kill(first, signal.SIGKILL)
        t0 = time.monotonic()
        restarted = wait_for(lambda: re.search(r"restarted as pid (\d+)", log.read_text()), 30, "the restart")
        assert int(restarted.group(1)) != first
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

        def up() -> bool:
            try:
                return api.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "the API to answer")
        (run_id,) = api.post("/api/v1/experiments", json={"spec": spec_with(**{"train.max_steps": 3})}).json()["run_ids"]
        run = wait_for(
            lambda: (r := api.get(f"/api/v1/runs/{run_id}").json())["status"] in names.FINAL_STATES and r, 120, "the run"
        )
        assert run["status"] == names.SUCCEEDED, run["error"]
        print(f"worker killed -9: a run submitted afterwards succeeded {time.monotonic() - t0:.1f} s later")
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()


def test_serve_re_sends_queued_runs_whose_message_was_lost(tmp_path):
    from backend import crud
    from backend.queue import send_run
    from backend.reconcile import waiting_in_embedded_broker as queued_run_ids_in_embedded_broker
    from backend.serve import requeue_lost_messages
    from backend.settings import get_settings
    from tests.worker.celery_harness import cluster_env

    with cluster_env(tmp_path, f"sqlite:///{tmp_path / 'slimpipe.db'}", "filesystem://") as cluster:
        waiting, lost, running = cluster.submit(spec_with(), sweep={"train.max_steps": [1, 2, 3]}, send=False)
        settings = get_settings()
        send_run(waiting, names.QUEUE_CPU, settings)
        assert crud.claim_run(running, "cpu1@test", "c1")
        broker_dir = settings.broker_dir.resolve()
        assert queued_run_ids_in_embedded_broker(broker_dir) == {waiting}

        assert requeue_lost_messages(settings) == [lost]
        assert queued_run_ids_in_embedded_broker(broker_dir) == {waiting, lost}
        assert requeue_lost_messages(settings) == []  # nothing is lost any more


def test_the_local_worker_does_not_outlive_a_killed_serve(tmp_path):
    from tests.worker.celery_scenarios import _alive

    port, log = free_port(), tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "backend.serve", "--port", str(port)],
            cwd=tmp_path,
            env=serve_env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        match = wait_for(lambda: re.search(r"worker pid (\d+)", log.read_text()), 60, "serve to start its worker")
        worker_pid = int(match.group(1))
        wait_for(lambda: "ready." in log.read_text(), 60, "the worker to be ready")
    finally:
        serve.kill()  # no Ctrl-C, no cleanup: kill -9
        serve.wait()
    wait_for(lambda: not _alive(worker_pid), 60, "the orphaned worker to shut down")
