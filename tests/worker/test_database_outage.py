"""PostgreSQL stopped at once (as a crashing host or a failover does) and started again, around a run.

A throwaway server of this module's own, since the tests stop it. Training goes on through the outage:
the reporter holds what it cannot write and writes it once the database is back, the run's end waits for
it, the API answers 503 meanwhile, and the sweeper does not fail a run for the heartbeats nobody could write.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from slimpipe import names
from tests.fixtures_servers import PostgresServer, throwaway_postgres
from tests.worker.celery_harness import Cluster, cluster_env, spec_with, wait_for


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with throwaway_postgres(crash_safe=True) as server:
        yield server


@pytest.fixture
def cluster(tmp_path, postgres, redis_server) -> Iterator[Cluster]:
    env = {"SLIMPIPE_WORKER_START": "subprocess"}
    with cluster_env(tmp_path, postgres.new_database("slimpipe_outage"), redis_server.url(7), **env) as c:
        yield c
    if not _up(postgres):  # a failed test must not leave the next one without its server
        postgres.start()


def _up(postgres: PostgresServer) -> bool:
    try:
        postgres._admin().close()
        return True
    except Exception:
        return False


def _down_for(postgres: PostgresServer, seconds: float) -> threading.Timer:
    """Stop PostgreSQL now and start it again `seconds` later, on a timer (join it to wait for the start)."""
    postgres.crash()
    restart = threading.Timer(seconds, postgres.start)
    restart.start()
    return restart


def _running_run(cluster: Cluster) -> int:
    """A run claimed by a worker that is not there (the reporter under test stands in for its child)."""
    from backend import crud

    (run_id,) = cluster.submit(spec_with(), send=False)
    assert crud.claim_run(run_id, "test@host", None)
    return run_id


def test_the_reporter_holds_what_it_cannot_write_and_writes_it_when_the_database_is_back(cluster, postgres):
    from worker.reporter import Reporter

    run_id = _running_run(cluster)
    now = [0.0]
    reporter = Reporter(run_id, flush_s=1.0, retry_max_s=4.0, clock=lambda: now[0])

    def step(k: int) -> bool:
        reporter.on_metrics([{"step": k, "name": names.TRAIN_LOSS, "value": 1.0 / k}])
        reporter.on_progress(k, 10)
        now[0] += 1.0
        return reporter.should_stop()

    assert not any(step(k) for k in range(1, 4))
    assert cluster.series(run_id, names.TRAIN_LOSS)[0] == [1, 2, 3]  # a write a second: one a step here

    postgres.crash()
    reporter.on_log("a line written while the database is down")
    assert not any(step(k) for k in range(4, 8))  # no error reaches the engine: it trains on
    assert reporter.down_since == 4.0 and len(reporter.points) == 4  # steps 4-7
    tries: list[float] = []
    real = reporter._guarded
    reporter._guarded = lambda write: tries.append(now[0]) or real(write)  # type: ignore[method-assign]
    assert not any(step(k) for k in range(8, 16))
    assert tries == [11.0, 15.0]  # failures at 4, 5 and 7 s: 1 s, 2 s, then 4 s apart (retry_max_s)

    postgres.start()
    assert not any(step(k) for k in range(16, 20))
    assert tries[2:] == [19.0, 19.0, 19.0]  # the held points and lines, the outage's line, the cancel flag
    assert reporter.down_since is None and len(reporter.points) == len(reporter.lines) == 0
    steps, values = cluster.series(run_id, names.TRAIN_LOSS)
    assert steps == list(range(1, 20)) and values == pytest.approx([1.0 / k for k in range(1, 20)])  # each once
    logs = cluster.logs(run_id)
    assert "a line written while the database is down" in logs
    [outage] = [line for line in logs if line.startswith("the database was unreachable for ")]
    assert outage.startswith("the database was unreachable for 15.0 s (OperationalError: ")
    assert outage.endswith("training went on, and the 16 metric points and 1 log lines held meanwhile are written now")
    assert cluster.run(run_id).progress_step == 19


@pytest.mark.parametrize("stored", [True, False], ids=["answer-lost", "not-stored"])
@pytest.mark.parametrize("kind", ["metrics", "logs"])
def test_a_batch_whose_write_broke_is_sent_again_under_its_key_and_stored_once(
    cluster, postgres, monkeypatch, stored, kind
):
    """The connection can break after PostgreSQL committed a batch and before its answer came back: the
    reporter sends the same batch again under the same key, and the database stores it once."""
    from sqlalchemy.exc import OperationalError

    from backend import crud
    from worker.reporter import Reporter

    run_id = _running_run(cluster)
    name = "append_metrics" if kind == "metrics" else "append_logs"
    real, calls = getattr(crud, name), []

    def breaks_once(rid, batch, key):
        calls.append((len(batch), key))
        if len(calls) == 1:
            if stored:
                real(rid, batch, key=key)
            raise OperationalError("INSERT INTO ...", {}, Exception("server closed the connection"))
        return real(rid, batch, key=key)

    monkeypatch.setattr(crud, name, breaks_once)
    now = [0.0]
    reporter = Reporter(run_id, flush_s=1.0, clock=lambda: now[0])

    def add(k: int) -> None:
        if kind == "metrics":
            reporter.on_metrics([{"step": k, "name": names.TRAIN_LOSS, "value": 1.0 / k}])
        else:
            reporter.on_log(f"line {k}")

    for k in (1, 2, 3):
        add(k)
    reporter.flush()
    assert reporter.down_since == 0.0 and len(getattr(reporter, "points" if kind == "metrics" else "lines")) == 3
    add(4)  # waits for the next batch: the broken one goes again as it was
    now[0] = 1.0
    reporter.maybe_flush()
    assert reporter.down_since is None and len(reporter.points) == len(reporter.lines) == 0
    (first_size, first_key), (again_size, again_key), (next_size, next_key) = calls[:3]
    assert (first_size, again_size, next_size) == (3, 3, 1)
    assert again_key == first_key != next_key
    if kind == "metrics":
        assert reporter.points_written == 4
        assert cluster.series(run_id, names.TRAIN_LOSS)[0] == [1, 2, 3, 4]  # each once
    else:
        lines = [line for line in cluster.logs(run_id) if line.startswith("line ")]
        assert lines == ["line 1", "line 2", "line 3", "line 4"]  # each once


def test_the_last_flush_waits_for_the_database_then_says_what_is_lost(cluster, postgres):
    from worker.reporter import DatabaseUnreachable, Reporter

    run_id = _running_run(cluster)
    reporter = Reporter(run_id, flush_s=0.2, retry_max_s=0.5)
    postgres.crash()
    reporter.on_metrics([{"step": 1, "name": names.TRAIN_LOSS, "value": 0.5}])
    reporter.on_log("the end")
    with pytest.raises(DatabaseUnreachable, match=r"1 metric points and 1 log lines of run \d+ are lost"):
        reporter.close(patience_s=1.0)

    restart = threading.Timer(2.0, postgres.start)
    restart.start()
    t0 = time.monotonic()
    reporter.close(patience_s=60.0)
    restart.join()
    assert 2.0 <= time.monotonic() - t0 < 30
    assert cluster.series(run_id, names.TRAIN_LOSS) == ([1], [0.5])
    assert "the end" in cluster.logs(run_id)


def test_the_final_state_waits_for_the_database_and_other_errors_do_not_wait(cluster, postgres):
    from sqlalchemy.exc import OperationalError

    from backend import crud, db

    run_id = _running_run(cluster)
    finish = lambda: crud.finish_run(run_id, names.SUCCEEDED, summary={"steps": 3})  # noqa: E731
    postgres.crash()
    t0 = time.monotonic()
    with pytest.raises(OperationalError):
        db.when_reachable(finish, patience_s=1.0)
    assert time.monotonic() - t0 < 5
    restart = threading.Timer(2.0, postgres.start)
    restart.start()
    assert db.when_reachable(finish, patience_s=60.0) is True
    restart.join()
    assert cluster.run(run_id).status == names.SUCCEEDED

    tries: list[int] = []
    with pytest.raises(ValueError, match="finish_run needs a final state"):
        db.when_reachable(lambda: tries.append(1) or crud.finish_run(run_id, names.RUNNING), patience_s=60.0)
    assert tries == [1]


def test_a_worker_s_catalog_waits_for_the_database(cluster, postgres):
    from backend import crud, db
    from worker import catalog

    _down_for(postgres, 2.0)
    t0 = time.monotonic()
    catalog.publish("cpu1@outage", models=["tiny_mlp"])
    assert time.monotonic() - t0 >= 1.5
    with db.session_scope() as session:
        assert set(crud.model_trees(session=session)) == {"tiny_mlp"}


def test_the_api_answers_503_with_retry_after_and_no_driver_details(cluster, postgres):
    from fastapi.testclient import TestClient

    from backend.main import create_app

    with TestClient(create_app(), base_url="http://127.0.0.1") as client:
        assert client.get("/api/v1/runs").status_code == 200
        postgres.crash()
        try:
            response = client.get("/api/v1/runs")
            ready = client.get("/readyz")
        finally:
            postgres.start()
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert response.json() == {"detail": "the database is unreachable right now (restarting?); try again in a few seconds"}
        assert ready.status_code == 503 and ready.json()["database"] is False
        assert client.get("/api/v1/runs").status_code == 200  # the pool's dead connections are replaced
    assert str(postgres.port) not in response.text


def test_the_sweeper_fails_no_run_for_heartbeats_missed_while_it_could_not_reach_the_database(cluster, postgres):
    from sqlalchemy import update

    from backend import crud, db
    from backend.models import Run, utcnow
    from backend.reconcile import LostRuns

    run_id = _running_run(cluster)
    with db.session_scope() as session:  # its heartbeat is 200 s old
        session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow() - timedelta(seconds=200)))
    now = [1000.0]
    lost_runs = LostRuns(timeout_s=120, clock=lambda: now[0])
    postgres.crash()
    try:
        with pytest.raises(Exception) as info:
            lost_runs.sweep()
        lost_runs.failed(info.value)
    finally:
        postgres.start()
    lost_runs.failed(ValueError("not the database's"))  # changes nothing
    assert lost_runs.unreachable_at == 1000.0
    now[0] += 119
    assert lost_runs.sweep() == []  # its worker may have trained through the outage: one timeout to beat again
    assert cluster.run(run_id).status == names.RUNNING
    now[0] += 1
    assert lost_runs.sweep() == [run_id]
    assert cluster.run(run_id).status == names.FAILED
    assert crud.mark_lost_runs(120) == []


def test_a_run_trains_through_a_postgres_restart_and_loses_no_metric_or_log_line(cluster, postgres):
    """The real worker and training child: PostgreSQL stopped for 5 s in the middle of a run (whether the run
    ends before the database is back depends on the machine's speed; both ways lose nothing)."""
    steps = 6000
    cluster.start_worker("cpu1@outage", "cpu")
    (run_id,) = cluster.submit(spec_with(**{"train.max_steps": steps, "train.eval_every": 2000}))
    cluster.wait_status(run_id, (names.RUNNING,), timeout=120)
    wait_for(lambda: len(cluster.series(run_id, names.TRAIN_LOSS)[0]) >= 20, 120, "the first steps' points")
    before = len(cluster.series(run_id, names.TRAIN_LOSS)[0])

    postgres.crash()
    time.sleep(5)
    postgres.start()
    after = cluster.run(run_id).status

    run = cluster.wait_final(run_id, timeout=600)
    assert run.status == names.SUCCEEDED, run.error
    assert before < steps
    assert cluster.series(run_id, names.TRAIN_LOSS)[0] == list(range(1, steps + 1))  # every step's point, once
    assert cluster.series(run_id, names.VAL_ACC)[0] == [2000, 4000, 6000]
    logs = cluster.logs(run_id)
    assert [line.split()[0] for line in logs if line.startswith("step:")] == [f"step:{k}" for k in range(1, steps + 1)]
    outages = [line for line in logs if line.startswith("the database was unreachable for ")]
    assert len(outages) == 1, outages
    assert 5 <= float(outages[0].split()[5]) < 60, outages[0]
    assert run.summary["steps"] == steps
    print(f"\n{outages[0]}\n{before} of {steps} steps written before the outage; the run was {after} when it ended")


def test_serve_waits_for_a_database_that_is_starting_and_names_one_that_never_comes(cluster, postgres, tmp_path,
                                                                                       monkeypatch, capsys):
    import argparse
    import os
    import subprocess
    import sys

    from backend import serve
    from benchmarks.dashboard import wait_http
    from tests.fixtures_servers import free_port

    port = free_port()
    _down_for(postgres, 2.0)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "slimpipe", "serve", "--no-worker", "--port", str(port)],
                                env=os.environ, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout_s=60)
    finally:
        proc.terminate()
        proc.wait(20)
    assert f"slimpipe: waiting up to 30 s for the database at postgresql+psycopg://postgres@127.0.0.1:{postgres.port}/" \
        in log.read_text()

    monkeypatch.setenv("SLIMPIPE_DATABASE_START_WAIT_S", "1")
    monkeypatch.setenv("SLIMPIPE_DATABASE_URL", "postgresql+psycopg://slimpipe:s3cret@127.0.0.1:1/nowhere")
    from backend.settings import get_settings

    get_settings.cache_clear()
    args = argparse.Namespace(host=None, port=None, no_worker=True, queues=None)
    assert serve.run(args) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("slimpipe: waiting up to 1 s for the database at postgresql+psycopg://slimpipe:***@127.0.0.1:1/nowhere")
    assert err[-1].startswith("slimpipe serve: cannot reach the database at postgresql+psycopg://slimpipe:***@127.0.0.1:1/nowhere (")
    assert err[-1].endswith("); start it, or point SLIMPIPE_DATABASE_URL at one that runs") and "s3cret" not in "".join(err)


def test_a_worker_that_starts_before_the_database_fails_its_orphans_once_the_database_is_up(cluster, postgres):
    """A host's reboot: the worker restarts under its name while PostgreSQL is still starting."""
    from backend import crud

    (run_id,) = cluster.submit(spec_with(), send=False)
    assert crud.claim_run(run_id, "cpu1@reboot", None)  # the run it was training when the host went down
    restart = _down_for(postgres, 3.0)
    cluster.start_worker("cpu1@reboot", "cpu")
    restart.join()
    run = cluster.wait_final(run_id, timeout=60)  # the heartbeat timeout (120 s) would take longer
    assert run.status == names.FAILED
    assert run.error == "worker lost: cpu1@reboot restarted while the run was running; retry it"


def test_a_worker_whose_database_stays_down_past_its_start_fails_its_orphans_from_its_sweep(cluster, postgres):
    """The start-up pass gives up after SLIMPIPE_DATABASE_START_WAIT_S; the periodic sweep fails the runs the
    worker's name left running once the database answers, and not the run the worker has claimed since."""
    from backend import crud

    orphan, fresh = cluster.submit(spec_with(), sweep={"train.seed": [1, 2]}, send=False)
    assert crud.claim_run(orphan, "cpu1@reboot", None)  # the run it was training when the host went down
    cluster.env["SLIMPIPE_DATABASE_START_WAIT_S"] = "1"
    postgres.crash()
    try:
        worker = cluster.start_worker("cpu1@reboot", "cpu")
        wait_for(lambda: "runs cpu1@reboot left running are failed once it answers" in worker.output(), 60,
                 "the worker to give up waiting at its start")
    finally:
        postgres.start()
    assert crud.claim_run(fresh, "cpu1@reboot", None)  # claimed after the start: the worker's own
    run = cluster.wait_final(orphan, timeout=60)  # the heartbeat timeout (120 s) would take longer
    assert run.error == "worker lost: cpu1@reboot restarted while the run was running; retry it"
    assert cluster.run(fresh).status == names.RUNNING


# --------------------------------------------------------------------------- the client


def _service(cluster: Cluster, port: int | None = None):
    from backend.settings import get_settings
    from tests.slimpipe.test_client import Server

    return Server(get_settings(), port)


def test_client_reads_ride_out_a_database_restart_and_writes_are_not_repeated(cluster, postgres):
    from slimpipe.client import Client, ClientError

    run_id = _running_run(cluster)
    told: list[str] = []
    with _service(cluster) as server, Client(server.url, patience_s=60, on_wait=told.append) as client:
        assert client.run(run_id)["status"] == names.RUNNING
        postgres.crash()
        try:
            t0 = time.monotonic()
            with pytest.raises(ClientError) as info:
                client.cancel(run_id)  # a write: one try, the service's answer
            assert info.value.status_code == 503 and time.monotonic() - t0 < 3
        finally:
            threading.Timer(3.0, postgres.start).start()
        t0 = time.monotonic()
        assert client.run(run_id)["status"] == names.RUNNING  # a read waits for the database
        assert 2.5 < time.monotonic() - t0 < 30
        assert told == [f"GET /api/v1/runs/{run_id}: 503 the database is unreachable right now (restarting?); try again "
                        "in a few seconds; trying again for up to 60 s"]  # once, however many tries
        with Client(server.url, patience_s=0) as impatient:
            postgres.crash()
            try:
                with pytest.raises(ClientError) as info:
                    impatient.run(run_id)
            finally:
                postgres.start()
            assert info.value.status_code == 503
    with Client(f"http://127.0.0.1:{server.port}", patience_s=60) as never_reached:
        t0 = time.monotonic()
        with pytest.raises(ClientError, match="cannot reach slimpipe"):
            never_reached.run(run_id)  # nothing there and never reached: no waiting
        assert time.monotonic() - t0 < 3


def test_events_go_on_through_a_database_restart_and_a_service_restart_with_no_point_twice(cluster, postgres):
    from backend import crud
    from slimpipe.client import Client

    run_id = _running_run(cluster)
    got: list[tuple[str, object]] = []
    errors: list[BaseException] = []

    def write(steps: range) -> None:
        crud.append_metrics(run_id, [(k, names.TRAIN_LOSS, 1.0 / k) for k in steps])

    def seen_steps() -> list[int]:
        return [p["step"] for e, d in got if e == "metrics" for p in d["points"]]  # type: ignore[index]

    server = _service(cluster).__enter__()
    port = server.port

    opened: list[object] = []  # each stream's query: None, then the cursor it resumes from
    told: list[str] = []

    def consume() -> None:
        try:
            with Client(server.url, patience_s=60, on_wait=told.append) as client:
                stream = client._http.stream
                client._http.stream = lambda *a, **k: opened.append(k["params"]) or stream(*a, **k)  # type: ignore[method-assign]
                got.extend(client.events(run_id))
        except BaseException as exc:
            errors.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        write(range(1, 6))
        wait_for(lambda: seen_steps() == [1, 2, 3, 4, 5], 30, "the first points")
        postgres.crash()
        time.sleep(3)  # the stream stays open
        postgres.start()
        write(range(6, 11))
        wait_for(lambda: seen_steps()[-1:] == [10], 60, "the points written after the database came back")
        server.__exit__()  # the service restarts: the stream is lost, and opened again where it stopped
        server = _service(cluster, port).__enter__()
        write(range(11, 16))
        crud.finish_run(run_id, names.SUCCEEDED)
        consumer.join(60)
    finally:
        server.__exit__()
    assert not consumer.is_alive() and errors == []
    assert seen_steps() == list(range(1, 16))  # each once
    assert told and all("; opening the stream again for up to 60 s" in message for message in told), told
    assert opened[0] is None and len(opened) >= 2 and all(set(q) == {"cursor"} for q in opened[1:]), opened  # type: ignore[arg-type]
    assert got[-1][0] == "status" and got[-1][1]["status"] == names.SUCCEEDED  # type: ignore[index]



def test_client_metric_ingest_waits_out_a_database_restart_and_stores_each_point_once(cluster, postgres):
    """A trainer of its own logging through the client: the service's 503 stored nothing, so the batch goes again."""
    from slimpipe.client import Client

    run_id = _running_run(cluster)
    with _service(cluster) as server, Client(server.url, patience_s=60) as client:
        assert client.log_metrics(run_id, [(1, "ext/loss", 1.0)]) == 1
        restart = _down_for(postgres, 2.0)
        t0 = time.monotonic()
        assert client.log_metrics(run_id, [(k, "ext/loss", 1.0 / k) for k in range(2, 7)]) == 5
        assert time.monotonic() - t0 >= 1.5
        restart.join()
    assert cluster.series(run_id, "ext/loss") == (list(range(1, 7)), pytest.approx([1.0 / k for k in range(1, 7)]))


def test_an_event_stream_first_opened_while_the_database_is_down_waits_for_it(cluster, postgres):
    from backend import crud
    from slimpipe.client import Client

    run_id = _running_run(cluster)
    with _service(cluster) as server, Client(server.url, patience_s=60) as client:  # never reached before
        restart = _down_for(postgres, 2.0)
        t0 = time.monotonic()
        events = client.events(run_id)
        event, data = next(events)  # the service answered 503 until the database was back
        assert (event, data["status"]) == ("status", names.RUNNING) and time.monotonic() - t0 >= 1.5
        restart.join()
        crud.finish_run(run_id, names.SUCCEEDED)
        assert [(e, d["status"]) for e, d in events if e == "status"] == [("status", names.SUCCEEDED)]
