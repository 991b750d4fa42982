"""Behaviour of a real worker, shared by the embedded-transport and the Redis test modules.

Each module defines a module-scoped `cluster` fixture (database + broker, worker `cpu1@test` on the
cpu queue and `gpu1@test` on the gpu queue), a `keep_ratios` fixture (the sweep) and imports these
tests. Waits are generous: a worker's first run waits for its forkserver to import torch, which
takes seconds on a quiet machine and can take a minute on a busy one.
"""

from __future__ import annotations

import os
import signal
import time

from backend import crud, db, runfiles
from slimpipe import names
from tests.worker.celery_harness import Cluster, spec_with, wait_for
from worker.child import TERM_GRACE_S

LONG = spec_with(**{"train.max_steps": 100_000, "train.eval_every": 100_000})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has stopped running all the same.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[-1][0] != "Z"


def _wait_training(cluster: Cluster, run_id: int, min_points: int = 3) -> int:
    """Wait until the run has written some loss points to SQL; returns how many."""
    return wait_for(
        lambda: (
            len(cluster.series(run_id, names.TRAIN_LOSS)[0]) >= min_points
            and len(cluster.series(run_id, names.TRAIN_LOSS)[0])
        ),
        120,
        f"run {run_id} to write {min_points} loss points",
    )


def test_submitted_run_goes_running_then_succeeds_with_metrics_in_sql(cluster: Cluster):
    (run_id,) = cluster.submit(spec_with(**{"train.max_steps": 30}))
    running = cluster.wait_status(run_id, (names.RUNNING, *names.FINAL_STATES))
    assert running.status == names.RUNNING, "the run should be seen running before it ends"
    assert running.worker_host == "cpu1@test"
    assert running.started_at is not None and running.celery_id

    run = cluster.wait_final(run_id)
    assert run.status == names.SUCCEEDED, run.error
    assert run.error is None and run.finished_at >= run.started_at
    assert run.progress_step == 30 and run.progress_total == 30
    steps, values = cluster.series(run_id, names.TRAIN_LOSS)
    assert steps == sorted(steps) and steps[-1] == 30 and len(steps) >= 15
    assert all(v is not None and v > 0 for v in values)
    assert values[-1] < values[0], "tiny_mlp on digits should learn in 30 steps"
    assert run.summary and run.summary.get("steps") == 30


def test_sweep_gives_one_finished_run_per_keep_ratio(cluster: Cluster, keep_ratios: list[float]):
    path = "compression.default.backward.topk"
    run_ids = cluster.submit(spec_with(**{"train.max_steps": 5}), sweep={path: keep_ratios})
    assert len(run_ids) == len(keep_ratios)
    runs = [cluster.wait_final(run_id, timeout=30 + 15 * len(run_ids)) for run_id in run_ids]
    assert [r.status for r in runs] == [names.SUCCEEDED] * len(keep_ratios), [r.error for r in runs]
    assert [r.sweep_values[path] for r in runs] == keep_ratios
    assert [r.spec["compression"]["default"]["backward"]["topk"] for r in runs] == keep_ratios
    for r in runs:
        assert cluster.series(r.id, names.TRAIN_LOSS)[0][-1] == 5


def test_cancel_stops_a_running_run(cluster: Cluster):
    (run_id,) = cluster.submit(LONG)
    _wait_training(cluster, run_id)
    cluster.cancel(run_id)
    asked = time.monotonic()
    run = cluster.wait_final(run_id, timeout=20)
    assert run.status == names.CANCELLED
    assert time.monotonic() - asked < 10
    assert run.error.startswith("cancelled at step ")
    stopped_at = int(run.error.split()[-1])
    steps, _ = cluster.series(run_id, names.TRAIN_LOSS)
    assert steps[-1] <= stopped_at < 100_000
    assert any(m.startswith("cancelled at step") for m in cluster.logs(run_id))


def test_cancel_of_a_queued_run_never_trains(cluster: Cluster):
    # The only worker is busy with a long run, so the second one waits in the queue.
    (busy,), (waiting,) = cluster.submit(LONG), cluster.submit(LONG)
    _wait_training(cluster, busy, 1)
    cluster.cancel(waiting)
    cluster.cancel(busy)
    assert cluster.wait_final(busy, timeout=20).status == names.CANCELLED
    run = cluster.wait_final(waiting)
    assert run.status == names.CANCELLED and run.error == "cancelled before it started"
    # The worker receives the message after the busy run and must skip it, not train it.
    skipped = f"run {waiting} is not queued any more; skipping"
    wait_for(lambda: skipped in cluster.workers[0].output(), 20, "the worker to skip the cancelled run")
    assert cluster.run(waiting).started_at is None
    assert cluster.series(waiting, names.TRAIN_LOSS)[0] == []


def test_retry_reruns_the_frozen_spec_as_a_new_attempt(cluster: Cluster):
    (first,) = cluster.submit(spec_with(**{"train.max_steps": 8}))
    assert cluster.wait_final(first).status == names.SUCCEEDED
    second = cluster.retry(first)
    run = cluster.wait_final(second)
    assert run.status == names.SUCCEEDED, run.error
    assert (run.attempt, run.retry_of) == (2, first)
    # Same frozen spec and seed: the retry reproduces the first attempt's loss curve.
    assert cluster.series(second, names.TRAIN_LOSS) == cluster.series(first, names.TRAIN_LOSS)
    assert cluster.logs(second)[1].startswith(f"run {first} left no checkpoint on this host; starting from step 0")


def test_retry_of_a_cancelled_run_continues_from_its_last_checkpoint(cluster: Cluster):
    (first,) = cluster.submit(spec_with(**{"train.max_steps": 100_000, "train.eval_every": 4, "train.checkpoint_every": 5}))
    _wait_training(cluster, first, 12)
    cluster.cancel(first)
    stopped = int(cluster.wait_final(first, timeout=30).error.split()[-1])
    saved = stopped  # a cancel saves where it stopped (checkpoint_every only adds the steps in between)
    second = cluster.retry(first)
    _wait_training(cluster, second, stopped + 3)
    cluster.cancel(second)
    assert cluster.wait_final(second, timeout=30).status == names.CANCELLED
    assert f"continuing run {first} from its checkpoint at step {saved} " in "\n".join(cluster.logs(second))
    for name in (names.TRAIN_LOSS, names.VAL_ACC):
        steps, values = cluster.series(second, name)
        first_steps, first_values = cluster.series(first, name)
        # Steps up to the checkpoint are the first attempt's points, copied, and the retry goes on from there.
        assert steps == sorted(set(steps)) and steps[0] in (1, 4)
        common = [s for s in first_steps if s <= stopped]
        assert steps[: len(common)] == common
        assert values[: len(common)] == first_values[: len(common)], name
    assert not (cluster.tmp / "runs" / f"run-{first}" / "checkpoint.tmp").exists()


def test_nan_loss_fails_the_run_with_the_reason(cluster: Cluster):
    (run_id,) = cluster.submit(spec_with(**{"optim.lr": 1e12, "train.max_steps": 50}))
    run = cluster.wait_final(run_id)
    assert run.status == names.FAILED
    assert run.error.startswith("training diverged:") and "nan" in run.error.lower()
    assert "TrainingDiverged" in run.traceback


def test_kill9_of_the_training_child_fails_the_run_and_keeps_its_metrics(cluster: Cluster):
    (run_id,) = cluster.submit(LONG)
    pid = cluster.child_pid(run_id)
    written = _wait_training(cluster, run_id, 5)
    os.kill(pid, signal.SIGKILL)
    run = cluster.wait_final(run_id, timeout=20)
    assert run.status == names.FAILED
    assert run.error == "training process was killed by SIGKILL (the out-of-memory killer, or kill -9)"
    assert len(cluster.series(run_id, names.TRAIN_LOSS)[0]) >= written
    # The worker survived its child and takes the next run.
    (next_id,) = cluster.submit(spec_with(**{"train.max_steps": 3}))
    assert cluster.wait_final(next_id).status == names.SUCCEEDED


PLACED = spec_with(**{
    "pipeline.runner": "distributed",
    "pipeline.placement": [names.QUEUE_CPU, names.QUEUE_GPU],
    "train.max_steps": 6,
    "train.eval_every": 3,
    "train.threads": 1,
})


def test_distributed_run_placed_on_two_workers_trains_with_metrics_in_sql(cluster: Cluster):
    (run_id,) = cluster.submit(PLACED, queue=names.QUEUE_CPU)
    run = cluster.wait_final(run_id, timeout=240)
    assert run.status == names.SUCCEEDED, (run.error, cluster.logs(run_id)[-20:])
    steps, losses = cluster.series(run_id, names.TRAIN_LOSS)
    assert steps == [1, 2, 3, 4, 5, 6] and all(v is not None and v > 0 for v in losses)
    assert len(cluster.series(run_id, names.VAL_ACC)[0]) == 2
    assert len(cluster.series(run_id, names.stage_metric(1, "compute_s"))[0]) == 6
    logs = cluster.logs(run_id)
    assert any(line.startswith("stages 1 sent to queue 'gpu'; rendezvous at ") for line in logs)
    assert "stages 1 started on gpu1@test" in logs
    assert run.summary["runner"] == "distributed" and run.summary["n_stages"] == 2


def test_worker_killed_for_good_is_swept_by_heartbeat_timeout(cluster: Cluster):
    from backend import crud

    # gpu1@test has warmed up in the background since the module started; it runs one run and dies.
    worker = next(w for w in cluster.workers if w.name == "gpu1@test")
    (run_id,) = cluster.submit(LONG, queue=names.QUEUE_GPU)
    pid = cluster.child_pid(run_id)
    _wait_training(cluster, run_id)
    assert crud.mark_lost_runs(2.0) == []  # alive: its heartbeat is fresh
    worker.kill9()
    # The child unwinds on SIGTERM (flushing its points) and is force-ended TERM_GRACE_S later at worst.
    wait_for(lambda: not _alive(pid), TERM_GRACE_S + 5, "the orphaned training child to die with its worker")
    time.sleep(2.5)
    # What every worker's sweeper thread and `slimpipe serve` run periodically (here with a 2 s timeout).
    assert crud.mark_lost_runs(2.0) == [run_id]
    run = cluster.run(run_id)
    assert run.status == names.FAILED and run.error == "worker lost: no heartbeat for more than 2 s"


def test_worker_killed_and_restarted_fails_its_run_as_worker_lost(cluster: Cluster):
    worker = cluster.workers[0]
    (run_id,) = cluster.submit(LONG)
    pid = cluster.child_pid(run_id)
    written = _wait_training(cluster, run_id)
    worker.kill9()
    # The child unwinds on SIGTERM (flushing its points) and is force-ended TERM_GRACE_S later at worst.
    wait_for(lambda: not _alive(pid), TERM_GRACE_S + 5, "the orphaned training child to die with its worker")
    assert cluster.run(run_id).status == names.RUNNING  # nobody has noticed yet
    (gone,) = cluster.submit(LONG, send=False)
    deleted = runfiles.run_dir(gone)  # a run deleted while its folder was here and the API elsewhere
    (deleted / "stages-1").mkdir(parents=True)
    with db.session_scope() as s:
        crud.delete_run(session=s, run_id=gone)
    legacy = runfiles.database_folder().parent / "run-77"  # written before folders were named by database
    legacy.mkdir(exist_ok=True)

    worker.start()  # same node name: it knows it cannot still be running anything
    run = cluster.wait_final(run_id, timeout=10)
    assert run.status == names.FAILED
    assert run.error.startswith("worker lost: cpu1@test restarted")
    assert len(cluster.series(run_id, names.TRAIN_LOSS)[0]) >= written
    wait_for(lambda: not deleted.exists(), 10, "the restarted worker to remove the deleted run's folder")
    assert runfiles.run_dir(run_id).is_dir()  # the lost run's stays, for a retry to continue from
    assert legacy.is_dir() and "from before run folders were named by their database" in worker.output()


def test_placement_on_a_queue_no_worker_consumes_fails_naming_the_queue(cluster: Cluster):
    # gpu1@test was killed for good above: nobody consumes the gpu queue now.
    assert all(w.name != "gpu1@test" or w.proc.poll() is not None for w in cluster.workers)
    (run_id,) = cluster.submit(PLACED, queue=names.QUEUE_CPU)
    run = cluster.wait_final(run_id, timeout=180)
    assert run.status == names.FAILED
    assert "stage 1 placed on queue 'gpu' did not join within 30 s" in run.error
    assert "python -m worker --queues gpu" in run.error
