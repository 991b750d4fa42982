"""The task, its supervisor, reporter and recovery, without a broker: faults injected by a stand-in engine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from slimpipe import names
from tests.worker.celery_harness import ROOT, cluster_env, wait_for
from worker.supervisor import SHUTDOWN_REASON, Hooks, Supervisor, subprocess_launcher

FAKE = {"model": {"name": "tiny_mlp"}, "data": {"name": "digits"}, "train": {"max_steps": 5}}


def fake(name: str = "ok", steps: int = 5) -> dict:
    return {**FAKE, "name": name, "train": {"max_steps": steps}}


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    """SQLite in tmp, no worker: the tests call the task in-process; its child trains the stand-in engine."""
    monkeypatch.setenv("SLIMPIPE_TRAIN_MODULE", "tests.worker.fake_engine")
    monkeypatch.setenv("SLIMPIPE_WORKER_START", "subprocess")  # the stand-in needs no preloaded torch
    with cluster_env(tmp_path, f"sqlite:///{tmp_path / 'slimpipe.db'}", "filesystem://") as cluster:
        yield cluster


def run_task(run_id: int) -> str:
    from worker.tasks import run_experiment

    return run_experiment.apply(args=[run_id]).get()


# --------------------------------------------------------------------------- the task


def test_task_trains_a_queued_run_and_records_how_it_went(embedded):
    (run_id,) = embedded.submit(fake("ok", 5), send=False)
    assert run_task(run_id) == names.SUCCEEDED
    run = embedded.run(run_id)
    assert (run.status, run.error, run.worker_host) == (names.SUCCEEDED, None, socket.gethostname())
    assert (run.progress_step, run.progress_total) == (5, 5)
    assert run.started_at <= run.finished_at
    assert run.summary == {"steps": 5, "final_val_acc": 50.0}
    assert embedded.series(run_id, names.TRAIN_LOSS) == ([1, 2, 3, 4, 5], [1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    logs = embedded.logs(run_id)
    assert logs[0].startswith("training process ") and logs[0].endswith(f" started on {socket.gethostname()}")
    assert logs[1:] == [f"step {i}" for i in range(1, 6)]


def test_task_skips_a_run_that_is_no_longer_queued(embedded):
    (run_id,) = embedded.submit(fake(), send=False)
    embedded.cancel(run_id)
    assert run_task(run_id) == "skipped"
    run = embedded.run(run_id)
    assert (run.status, run.started_at, run.error) == (names.CANCELLED, None, "cancelled before it started")


def test_engine_exception_fails_the_run_with_its_traceback_and_keeps_earlier_metrics(embedded):
    (run_id,) = embedded.submit(fake("raise", 10), send=False)
    assert run_task(run_id) == names.FAILED
    run = embedded.run(run_id)
    assert run.error == "RuntimeError: the engine broke at step 3"
    assert "fake_engine.py" in run.traceback and "RuntimeError" in run.traceback
    assert embedded.series(run_id, names.TRAIN_LOSS)[0] == [1, 2]


def test_nan_loss_fails_the_run_as_diverged(embedded):
    (run_id,) = embedded.submit(fake("nan"), send=False)
    assert run_task(run_id) == names.FAILED
    assert embedded.run(run_id).error == "training diverged: loss is nan at step 2"


def test_child_that_exits_without_an_outcome_fails_with_its_exit_code_and_output(embedded):
    (run_id,) = embedded.submit(fake("exit"), send=False)
    assert run_task(run_id) == names.FAILED
    run = embedded.run(run_id)
    assert run.error == "training process exited with code 7 before reporting a result"
    assert run.traceback == "dying without a word"
    assert "dying without a word" in embedded.logs(run_id)  # forwarded to the run's log as OUTPUT


def test_missing_engine_fails_the_run_and_says_so(embedded, monkeypatch):
    monkeypatch.setenv("SLIMPIPE_TRAIN_MODULE", "tests.worker.no_such_engine")
    (run_id,) = embedded.submit(fake(), send=False)
    assert run_task(run_id) == names.FAILED
    assert (
        embedded.run(run_id).error == "cannot load the training engine: No module named 'tests.worker.no_such_engine'"
    )


def test_cancel_is_seen_at_the_next_step(embedded):
    from backend import crud
    from worker.reporter import Reporter

    (run_id,) = embedded.submit(fake(), send=False)
    assert crud.claim_run(run_id, "w@h", "c1")
    reporter = Reporter(run_id)
    assert reporter.should_stop() is False
    embedded.cancel(run_id)
    assert reporter.should_stop() is True


# --------------------------------------------------------------------------- supervisor


def supervise(code: str, hooks: Hooks | None = None, **kwargs) -> tuple[Supervisor, object]:
    """Supervise `python -c code RUN_ID OUTCOME_PATH`."""
    supervisor = Supervisor(1, hooks, launcher=subprocess_launcher([sys.executable, "-c", code]), poll_s=0.05, **kwargs)
    return supervisor, supervisor.run()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_supervisor_reads_the_outcome_file():
    code = (
        "import json, sys; open(sys.argv[2], 'w').write(json.dumps({'status': 'succeeded', 'summary': {'steps': 3}}))"
    )
    _, outcome = supervise(code)
    assert (outcome.status, outcome.error, outcome.summary) == (names.SUCCEEDED, None, {"steps": 3})


@pytest.mark.parametrize(
    ("sig", "reason"),
    [
        (signal.SIGKILL, "training process was killed by SIGKILL (the out-of-memory killer, or kill -9)"),
        (signal.SIGSEGV, "training process was killed by SIGSEGV (a crash in native code)"),
    ],
)
def test_supervisor_names_the_signal_that_killed_the_child(sig, reason):
    _, outcome = supervise(f"import os; print('last words', flush=True); os.kill(os.getpid(), {int(sig)})")
    assert (outcome.status, outcome.error, outcome.traceback) == (names.FAILED, reason, "last words")


def test_supervisor_kills_a_child_stuck_after_cancel_once_the_grace_is_over():
    started = []
    hooks = Hooks(cancel_requested=lambda: True, started=started.append)
    t0 = time.monotonic()
    _, outcome = supervise(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
        hooks,
        cancel_grace_s=0.3,
        stop_grace_s=0.3,
    )
    assert outcome.status == names.CANCELLED
    assert outcome.error == "cancelled; the training process did not stop within 0.3 s and was killed"
    assert time.monotonic() - t0 < 10
    assert _gone(started[0])


def test_supervisor_asks_the_child_to_stop_when_the_worker_shuts_down_and_ends_the_run_cancelled():
    shutdown = threading.Event()
    started, asked = [], []
    hooks = Hooks(
        shutdown=shutdown, started=lambda pid: (started.append(pid), shutdown.set()), request_stop=lambda: asked.append(1)
    )
    # A child that ignores the request is stopped by signal once the shutdown grace is over.
    _, outcome = supervise("import time; time.sleep(60)", hooks, shutdown_grace_s=0.3)
    assert (outcome.status, outcome.error) == (names.CANCELLED, SHUTDOWN_REASON)
    assert asked == [1]
    assert _gone(started[0])


def test_supervisor_heartbeats_and_forwards_output_while_the_child_runs():
    beats, lines = [], []
    hooks = Hooks(beat=lambda: beats.append(time.monotonic()), output=lambda batch, key: lines.extend(batch))
    code = "import time\nfor i in range(4):\n    print('line', i, flush=True); time.sleep(0.2)"
    _, outcome = supervise(code, hooks, heartbeat_s=0.1, output_flush_s=0.1)
    assert lines == ["line 0", "line 1", "line 2", "line 3"]
    assert len(beats) >= 4
    assert outcome.error == "training process exited with code 0 before reporting a result"


def test_output_lines_the_store_refuses_come_again_with_the_next_batch_and_are_kept_at_the_end():
    calls: list[tuple[list[str], str]] = []
    stored: list[str] = []

    def output(lines: list[str], key: str) -> None:  # the database is away for the first two batches, then for good
        calls.append((list(lines), key))
        if len(calls) <= 2 or refuse_all:
            raise ConnectionError("the database is away")
        stored.extend(lines)

    code = "import time\nfor i in range(6):\n    print('line', i, flush=True); time.sleep(0.15)"
    every_line = [f"line {i}" for i in range(6)]
    refuse_all = False
    supervisor, _ = supervise(code, Hooks(output=output), output_flush_s=0.1)
    assert stored == every_line and len(supervisor.unsent_output) == 0  # each once, in order
    assert calls[0] == calls[1] == calls[2]  # refused: the same batch again, under the same key
    assert len({key for _, key in calls}) == len(calls) - 2  # later batches: keys of their own

    calls.clear()
    refuse_all = True
    supervisor, _ = supervise(code, Hooks(output=output), output_flush_s=0.1)
    assert supervisor.unsent_output.items == every_line  # for the task to store once the database is back


# --------------------------------------------------------------------------- reporter


def test_reporter_writes_in_batches_of_points_or_seconds(embedded, monkeypatch):
    from backend import crud
    from worker.reporter import Reporter

    (run_id,) = embedded.submit(fake(), send=False)
    writes = []
    real = crud.append_metrics
    monkeypatch.setattr(crud, "append_metrics", lambda rid, pts, key: writes.append(len(pts)) or real(rid, pts, key=key))
    now = [0.0]
    reporter = Reporter(run_id, flush_s=1.0, max_points=500, clock=lambda: now[0])
    for step in range(1, 251):  # two points a step: a write every 250 steps
        reporter.on_metrics([{"step": step, "name": "a", "value": 1.0}, {"step": step, "name": "b", "value": 2.0}])
        reporter.maybe_flush()
    assert writes == [500]
    reporter.on_metrics([{"step": 251, "name": "a", "value": 1.0}])
    reporter.maybe_flush()
    assert writes == [500]
    now[0] = 1.5
    reporter.maybe_flush()
    assert writes == [500, 1]
    assert len(embedded.series(run_id, "a")[0]) == 251


def test_reporter_keeps_a_live_summary_until_the_engine_writes_its_own(embedded):
    from backend import crud
    from slimpipe import names
    from worker.reporter import Reporter

    (run_id,) = embedded.submit(fake(), send=False)
    reporter = Reporter(run_id)
    for step, (acc, fwd) in enumerate([(50.0, 100.0), (70.0, 300.0), (60.0, float("nan"))], start=1):
        reporter.on_metrics(
            [
                {"step": step, "name": names.VAL_ACC, "value": acc},
                {"step": step, "name": names.WIRE_BYTES_FWD, "value": fwd},
                {"step": step, "name": names.WIRE_BYTES_BWD, "value": 50.0},
                {"step": step, "name": names.TRAIN_LOSS, "value": 1.0},
            ]
        )
    reporter.flush()
    summary = embedded.run(run_id).summary
    assert summary["best_val_acc"] == 70.0 and summary["final_val_acc"] == 60.0
    assert summary["wire_bytes_fwd_per_step"] == 200.0  # the NaN is left out of the mean
    assert summary["wire_bytes_per_step"] == 250.0
    crud.finish_run(run_id, names.SUCCEEDED, summary={"best_val_acc": 71.0, "wire_bytes_per_step": 240.0})
    final = embedded.run(run_id).summary
    assert final["best_val_acc"] == 71.0 and final["wire_bytes_per_step"] == 240.0


def test_live_time_per_batch_is_a_median_without_the_first_step_and_the_eta_goes_when_the_run_ends(embedded):
    from backend import crud
    from slimpipe import names
    from worker.reporter import Reporter

    (run_id,) = embedded.submit(fake(), send=False)
    reporter = Reporter(run_id)
    for step, seconds in enumerate([9.0, 1.0, 1.2, 5.0, 1.1], start=1):  # compiling, then one slow step
        reporter.on_metrics([{"step": step, "name": names.TIME_BATCH, "value": seconds}])
        reporter.on_progress(step, 10, None if step == 1 else 2.5 * (10 - step))
    reporter.flush()
    live = embedded.run(run_id).summary
    assert live["time_per_batch_s"] == 1.15  # median of 1.0, 1.2, 5.0, 1.1 (a mean of all five: 3.46)
    assert live[names.SUMMARY_ETA_S] == 12.5 and abs(live[names.SUMMARY_ETA_AT] - time.time()) < 60
    crud.finish_run(run_id, names.FAILED, "boom")  # no final summary: the live figures stay, the ETA goes
    ended = embedded.run(run_id).summary
    assert ended["time_per_batch_s"] == 1.15 and names.SUMMARY_ETA_S not in ended and names.SUMMARY_ETA_AT not in ended


# --------------------------------------------------------------------------- recovery


def test_a_restarted_worker_fails_only_its_own_running_runs(embedded):
    from backend import crud
    from worker import recovery

    mine, other, queued = embedded.submit(fake(), sweep={"train.max_steps": [1, 2, 3]}, send=False)
    assert crud.claim_run(mine, "cpu1@host", "c1") and crud.claim_run(other, "cpu2@host", "c2")
    assert recovery.sweep("cpu1@host") == [mine]
    assert embedded.run(mine).error == "worker lost: cpu1@host restarted while the run was running; retry it"
    assert [embedded.run(i).status for i in (mine, other, queued)] == [names.FAILED, names.RUNNING, names.QUEUED]


def test_the_sweeper_thread_fails_runs_past_the_heartbeat_timeout_and_removes_deleted_runs_folders(
        embedded, monkeypatch):
    from backend import crud, db, runfiles
    from backend.settings import get_settings
    from worker import recovery

    monkeypatch.setenv("SLIMPIPE_HEARTBEAT_TIMEOUT_S", "0.5")
    get_settings.cache_clear()
    run_id, gone = embedded.submit(fake(), sweep={"train.max_steps": [1, 2]}, send=False)
    assert crud.claim_run(run_id, "gone@host", "c1")
    deleted = runfiles.run_dir(gone)  # a run deleted while its folder was on this host and the API elsewhere
    deleted.mkdir(parents=True)
    with db.session_scope() as s:
        crud.delete_run(session=s, run_id=gone)
    stop = recovery.start_sweeper(interval_s=0.1)
    try:
        wait_for(lambda: not deleted.exists(), 10, "the sweeper to remove the deleted run's folder")
        run = embedded.wait_final(run_id, timeout=10)
    finally:
        stop.set()
    assert (run.status, run.error) == (names.FAILED, "worker lost: no heartbeat for more than 0.5 s")


# --------------------------------------------------------------------------- configuration


def test_celery_config_has_explicit_queues_late_acks_and_one_message_at_a_time(tmp_path):
    from backend.settings import Settings
    from worker.celery_app import celery_config

    config = celery_config(Settings(broker_url="filesystem://", broker_dir=tmp_path / "broker"))
    assert [(q.name, q.routing_key) for q in config["task_queues"]] == [("cpu", "cpu"), ("gpu", "gpu")]
    assert config["task_create_missing_queues"] is False
    assert config["task_acks_late"] is True and config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["result_backend"] is None
    options = config["broker_transport_options"]
    assert options["polling_interval"] == 0.1
    assert options["data_folder_in"] == options["data_folder_out"] == str((tmp_path / "broker" / "queue").resolve())
    assert options["control_folder"] == str((tmp_path / "broker" / "control").resolve())
    redis = celery_config(Settings(broker_url="redis://127.0.0.1:6379/0"))
    assert redis["broker_transport_options"] == {"visibility_timeout": 6 * 3600}


def test_a_task_for_an_undeclared_queue_is_refused(tmp_path):
    from celery.exceptions import QueueNotFound

    from backend.settings import Settings
    from worker.celery_app import make_app

    app = make_app(Settings(broker_url="filesystem://", broker_dir=tmp_path / "broker"))
    with pytest.raises(QueueNotFound):
        app.send_task(names.TASK_RUN_EXPERIMENT, args=[1], queue="tpu")
    assert list((tmp_path / "broker" / "queue").iterdir()) == []


def test_worker_entry_point_takes_queues_from_the_environment_and_refuses_unknown_ones(monkeypatch, capsys):
    from backend.settings import get_settings
    from worker import __main__ as entry

    assert entry.main(["--queues", "cpu,tpu"]) == 2
    assert "unknown queue tpu; choose from cpu, gpu" in capsys.readouterr().err
    argv = entry.celery_argv(["gpu", "cpu"], "gpu-cpu@%h", "INFO")
    assert argv[argv.index("--queues") + 1] == "gpu,cpu" and argv[argv.index("--pool") + 1] == "solo"
    monkeypatch.setenv("SLIMPIPE_WORKER_QUEUES", "gpu")
    get_settings.cache_clear()
    try:
        assert get_settings().queues == ["gpu"]
    finally:
        get_settings.cache_clear()


def test_docker_compose_has_postgres_redis_api_and_gpu_and_cpu_workers():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "api", "worker-gpu", "worker-cpu"}
    gpu = services["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}]
    assert gpu["environment"]["SLIMPIPE_WORKER_QUEUES"] == "gpu"
    assert services["worker-cpu"]["environment"]["SLIMPIPE_WORKER_QUEUES"] == "cpu"
    for name in ("api", "worker-gpu", "worker-cpu"):
        env = services[name]["environment"]
        assert env["SLIMPIPE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["SLIMPIPE_BROKER_URL"] == "redis://redis:6379/0"
    assert services["worker-gpu"]["command"][:3] == ["python", "-m", "worker"]
    assert "--no-worker" in services["api"]["command"]
    assert {service["restart"] for service in services.values()} == {"unless-stopped"}
    assert (ROOT / "Dockerfile").exists()
    assert Path(ROOT / ".dockerignore").read_text().splitlines()[0] == ".venv"


def test_wait_for_reports_what_it_waited_for():
    with pytest.raises(AssertionError, match="timed out after 0.1 s waiting for godot"):
        wait_for(lambda: False, 0.1, "godot")
    assert wait_for(lambda: 5, 1, "five") == 5


def test_a_child_that_swallows_sigterm_still_ends_after_the_grace():
    code = (
        "import os, signal, time, worker.child as child\n"
        "child.TERM_GRACE_S = 0.3\n"
        "signal.signal(signal.SIGTERM, child._on_sigterm)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    try:\n"
        "        time.sleep(0.05)\n"
        "    except SystemExit:\n"
        "        pass  # what a native callback does with the exception\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM


# --------------------------------------------------------------------------- data paths, checked again where files open


@pytest.mark.parametrize(
    ("model", "data"),
    [
        ({"name": "tiny_mlp"}, {"name": "text_file", "options": {"train": "/etc/passwd"}}),
        ({"name": "tiny_mlp"}, {"name": "text_file", "options": {"train": "escape/passwd"}}),  # a symlink out
        ({"name": "hf_classifier", "options": {"tokenizer": "/etc"}}, {"name": "synthetic_text"}),
    ],
)
def test_a_spec_naming_a_file_outside_the_data_root_fails_before_any_file_is_opened(
    embedded, tmp_path, monkeypatch, model, data
):
    from backend.settings import get_settings

    root = tmp_path / "data"
    root.mkdir()
    os.symlink("/etc", root / "escape")
    monkeypatch.setenv("SLIMPIPE_DATA_ROOT", str(root))  # the training child inherits it
    get_settings.cache_clear()
    # Straight into SQL, as a row written before the API checked paths (or by anything else) would be.
    (run_id,) = embedded.submit({**fake(), "model": model, "data": data}, send=False)
    assert run_task(run_id) == names.FAILED
    run = embedded.run(run_id)
    assert "outside SLIMPIPE_DATA_ROOT" in run.error
    assert "root:" not in run.error and "root:" not in (run.traceback or "")  # /etc/passwd's first line
    assert not any(line.startswith("step ") for line in embedded.logs(run_id))  # the engine never ran


def test_files_an_earlier_run_of_the_same_number_left_are_set_aside_not_taken_as_this_runs(embedded):
    from backend import runfiles

    (run_id,) = embedded.submit(fake("ok", 2), send=False)
    folder = runfiles.run_dir(run_id)  # as a restored database, or SQLite reusing a deleted run's id, leaves it
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"another run's weights")
    assert run_task(run_id) == names.SUCCEEDED
    (aside,) = folder.parent.glob(f"run-{run_id}.leftover-*")
    assert (aside / "checkpoint.pt").read_bytes() == b"another run's weights"
    assert not (folder / "checkpoint.pt").exists()
    assert f"moved the files an earlier run numbered {run_id} left in this host's runs folder to {aside}" in (
        embedded.logs(run_id))


# --------------------------------------------------------------------------- a retry continues from a checkpoint


def test_a_retry_takes_over_its_earlier_attempts_checkpoint_and_points(embedded):
    import torch

    from backend import crud, db
    from slimpipe.spec import parse_spec
    from worker.child import continue_earlier_attempt, run_dir
    from worker.reporter import Reporter

    def attempt_after(spec: dict, checkpoint_step: int | None) -> tuple[int, int]:
        (first,) = embedded.submit(spec, send=False)
        with db.session_scope() as s:
            crud.claim_run(first, "h", "t", session=s)
            crud.heartbeat(first, 6, 10, session=s)
            crud.append_metrics(first, [(2, names.VAL_ACC, 80.0), (4, names.VAL_ACC, 90.0), (6, names.VAL_ACC, 95.0)], session=s)
            crud.append_metrics(first, [(k, names.TRAIN_LOSS, 1.0 / k) for k in range(1, 7)], session=s)
            crud.finish_run(first, names.FAILED, error="worker lost", session=s)
        if checkpoint_step is not None:
            run_dir(first).mkdir(parents=True)
            torch.save({"step": checkpoint_step, "stages": 2}, run_dir(first) / "checkpoint.pt")
            torch.save({"step": checkpoint_step}, run_dir(first) / "checkpoint.stage1.pt")
        with db.session_scope() as s:
            second = crud.create_retry(session=s, run=crud.get_run(session=s, run_id=first)).id
        return first, second

    def attempt(spec: dict, second: int) -> tuple[bool, Reporter, list[str]]:
        reporter = Reporter(second)
        resumed = continue_earlier_attempt(second, parse_spec(spec), reporter)
        reporter.flush()
        return resumed, reporter, embedded.logs(second)

    spec = fake("ok", 10)
    first, second = attempt_after(spec, 5)
    resumed, reporter, logs = attempt(spec, second)
    assert resumed and logs == [f"continuing run {first} from its checkpoint at step 5 (7 metric points up to it copied)"]
    for name in ("checkpoint.pt", "checkpoint.stage1.pt"):  # linked, not copied: the same file
        assert os.path.samefile(run_dir(first) / name, run_dir(second) / name)
    assert embedded.series(second, names.TRAIN_LOSS) == ([1, 2, 3, 4, 5], [1.0, 0.5, 1 / 3, 0.25, 0.2])
    assert embedded.series(second, names.VAL_ACC) == ([2, 4], [80.0, 90.0])
    assert reporter.live.figures["best_val_acc"] == 90.0  # the step-6 evaluation came after the checkpoint

    # No checkpoint, one taken at the last step, or stages on several hosts: start over, and say why.
    first, second = attempt_after(spec, None)
    assert attempt(spec, second)[::2] == (False, [
        f"run {first} left no checkpoint on this host; starting from step 0 "
        "(with train.checkpoint_every a retry continues from the last checkpoint)"
    ])
    first, second = attempt_after(spec, 10)
    assert attempt(spec, second)[::2] == (False, [f"run {first}'s checkpoint is of its last step; starting from step 0"])
    first, second = attempt_after(spec, 5)
    (run_dir(first) / "checkpoint.pt").write_bytes(b"PK\x03\x04 cut short")
    resumed, _, logs = attempt(spec, second)
    assert not resumed and logs[0].startswith(f"run {first}'s checkpoint cannot be read (")
    assert logs[0].endswith("); starting from step 0")
    placed = {**spec, "pipeline": {"runner": "distributed", "balance": 2, "placement": ["cpu", "gpu"]}}
    first, second = attempt_after(placed, 5)
    assert attempt(placed, second)[::2] == (False, [
        f"run {first} kept each placed stage's checkpoint on that stage's host; starting from step 0"
    ])
    assert embedded.series(second, names.TRAIN_LOSS) == ([], [])
