"""Queue reconciliation against a real Redis that loses its messages (FLUSHDB: a restart without persistence)."""

from __future__ import annotations

import time

import pytest
import redis

from slimpipe import names
from tests.worker.celery_harness import cluster_env

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

FAKE = {"name": "ok", "model": {"name": "tiny_mlp"}, "data": {"name": "digits"}, "train": {"max_steps": 3}}


def test_runs_whose_redis_messages_were_lost_are_re_sent_once_and_run_once(tmp_path, redis_server, postgres_server):
    from backend import reconcile
    from backend.settings import get_settings

    broker = redis_server.url(7)  # a database of its own on the shared throwaway server
    env = {
        "SLIMPIPE_REQUEUE_AFTER_S": "1",
        "SLIMPIPE_TRAIN_MODULE": "tests.worker.fake_engine",
        "SLIMPIPE_WORKER_START": "subprocess",
    }
    with cluster_env(tmp_path, postgres_server.new_database("slimpipe_reconcile"), broker, **env) as cluster:
        lost = cluster.submit(FAKE, sweep={"train.max_steps": [3, 4]})
        assert reconcile.waiting_run_ids(get_settings()) == set(lost)

        # The fault: Redis comes back empty. SQL still says queued; no message will ever deliver them.
        redis.Redis.from_url(broker).flushdb()
        assert reconcile.waiting_run_ids(get_settings()) == set()
        assert [cluster.run(r).status for r in lost] == [names.QUEUED, names.QUEUED]
        (waiting,) = cluster.submit(FAKE)  # sent after the loss: its message is there

        # Too young to be judged lost, then re-sent exactly once: the message is waiting afterwards.
        assert reconcile.resend_lost_runs(get_settings(), older_than_s=3600) == []
        assert reconcile.resend_lost_runs(get_settings(), older_than_s=0) == lost
        assert reconcile.resend_lost_runs(get_settings(), older_than_s=0) == []
        assert reconcile.waiting_run_ids(get_settings()) == {*lost, waiting}

        # Lose them again, then let a worker's own sweeper find and re-send them.
        redis.Redis.from_url(broker).flushdb()
        t0 = time.monotonic()
        cluster.start_worker("cpu1@reconcile", "cpu")
        for run_id in lost:
            run = cluster.wait_final(run_id, timeout=120)
            assert run.status == names.SUCCEEDED, run.error
        took = time.monotonic() - t0
        for run_id in lost:
            logs = cluster.logs(run_id)
            assert sum(line.startswith(reconcile.RESENT_PREFIX) for line in logs) == 2  # once per loss
            assert sum(line.startswith("training process ") for line in logs) == 1  # and trained once
        assert cluster.run(waiting).status in (names.QUEUED, names.RUNNING, names.SUCCEEDED)
        print(f"lost runs reached a final state {took:.1f} s after the worker started")


def test_redis_killed_and_restarted_empty_during_a_run_loses_no_run_and_no_metric(tmp_path, postgres_server):
    """kill -9 of Redis while a run trains and another waits, restarted without persistence (empty)."""
    from backend import reconcile
    from tests.fixtures_servers import throwaway_redis
    from tests.worker.celery_harness import spec_with

    steps = 400
    training = spec_with(**{"train.max_steps": steps, "train.eval_every": steps})
    env = {"SLIMPIPE_REQUEUE_AFTER_S": "1", "SLIMPIPE_WORKER_START": "subprocess"}
    with throwaway_redis() as redis_server, cluster_env(
        tmp_path, postgres_server.new_database("slimpipe_redis_crash"), redis_server.url(0), **env
    ) as cluster:
        cluster.start_worker("cpu1@crash", "cpu")
        (running,) = cluster.submit(training)
        (waiting,) = cluster.submit(spec_with(**{"train.max_steps": 3}))
        cluster.wait_status(running, (names.RUNNING,), timeout=120)
        written = len(cluster.series(running, names.TRAIN_LOSS)[0])

        redis_server.crash()
        time.sleep(1)
        redis_server.start()
        t0 = time.monotonic()
        (after,) = cluster.submit(spec_with(**{"train.max_steps": 3}))

        run = cluster.wait_final(running, timeout=300)
        assert run.status == names.SUCCEEDED, run.error
        assert written < steps  # it was training when Redis died
        assert cluster.series(running, names.TRAIN_LOSS)[0] == list(range(1, steps + 1))  # every step's point
        for run_id in (waiting, after):  # the one whose message died with Redis, and one sent after
            run = cluster.wait_final(run_id, timeout=120)
            assert run.status == names.SUCCEEDED, run.error
            assert sum(line.startswith("training process ") and " started" in line for line in cluster.logs(run_id)) == 1
        resent = [r for r in (waiting, after) if any(line.startswith(reconcile.RESENT_PREFIX) for line in cluster.logs(r))]
        print(f"all three runs final {time.monotonic() - t0:.1f} s after Redis restarted; re-sent: {resent} of {[waiting, after]}")
