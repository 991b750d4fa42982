"""The worker-side calls a training child makes, on both databases, and concurrent writers on SQLite."""

import subprocess
import sys
import time
from datetime import timedelta

from sqlalchemy import update

from backend import crud, db
from backend.models import runs, utcnow
from slimpipe import names


def queued_run(submit) -> int:
    return submit()["run_ids"][0]


def test_claim_heartbeat_finish(submit, settings):
    run_id = queued_run(submit)
    url = settings.database_url
    with db.session_scope(url) as s:
        assert crud.claim_run(run_id, "gpu-host-1", "task-1", session=s) is True
    with db.session_scope(url) as s:
        assert crud.claim_run(run_id, "gpu-host-2", "task-2", session=s) is False  # a redelivery does not run it twice
        assert crud.heartbeat(run_id, 5, 20, session=s) is False
        crud.update_summary(run_id, {"steps": 5}, session=s)
        assert crud.run_spec(run_id, session=s)["model"]["name"] == "tiny_mlp"
    with db.session_scope(url) as s:
        assert crud.finish_run(run_id, names.SUCCEEDED, summary={"final_val_acc": 90.5}, session=s) is True
        assert crud.finish_run(run_id, names.FAILED, error="late", session=s) is False  # final states stick
    with db.session_scope(url) as s:
        run = crud.get_run(session=s, run_id=run_id)
        assert (run.status, run.worker_host, run.celery_id, run.error) == (names.SUCCEEDED, "gpu-host-1", "task-1", None)
        assert (run.progress_step, run.progress_total) == (5, 20)
        assert run.summary == {"steps": 5, "final_val_acc": 90.5}
        assert run.started_at <= run.heartbeat_at <= run.finished_at


def test_lost_runs_are_failed_by_heartbeat_timeout(submit, settings):
    url = settings.database_url
    stale, fresh = queued_run(submit), queued_run(submit)
    with db.session_scope(url) as s:
        crud.claim_run(stale, "h", "a", session=s)
        crud.claim_run(fresh, "h", "b", session=s)
        s.execute(update(runs).where(runs.c.id == stale).values(heartbeat_at=utcnow() - timedelta(seconds=600)))
    with db.session_scope(url) as s:
        lost = crud.mark_lost_runs(120, session=s)
    assert stale in lost and fresh not in lost
    with db.session_scope(url) as s:
        assert crud.get_run(session=s, run_id=stale).status == names.FAILED
        assert crud.get_run(session=s, run_id=stale).error == "worker lost: no heartbeat for more than 120 s"
        assert crud.get_run(session=s, run_id=fresh).status == names.RUNNING


def test_a_retry_copies_its_earlier_attempts_points_up_to_a_step(submit, settings):
    url = settings.database_url
    first = queued_run(submit)
    with db.session_scope(url) as s:
        crud.claim_run(first, "h", "a", session=s)
        crud.heartbeat(first, 6, 40, session=s)
        crud.append_metrics(first, [(k, names.TRAIN_LOSS, 1.0 / k, 1000.0 + k) for k in range(1, 7)], session=s)
        crud.append_metrics(first, [(4, names.VAL_ACC, float("nan"), 1004.0)], session=s)
        crud.finish_run(first, names.FAILED, error="worker lost", session=s)
    with db.session_scope(url) as s:
        second = crud.create_retry(session=s, run=crud.get_run(session=s, run_id=first)).id
    with db.session_scope(url) as s:
        assert crud.earlier_attempt(first, session=s) is None
        assert crud.earlier_attempt(second, session=s) == (first, 40)
        assert crud.copy_metrics(first, second, 5, session=s) == 6
    with db.session_scope(url) as s:
        assert crud.read_series(session=s, run_id=second, name=names.TRAIN_LOSS) == (
            [1, 2, 3, 4, 5], [1.0, 0.5, 1 / 3, 0.25, 0.2], [1001.0, 1002.0, 1003.0, 1004.0, 1005.0]
        )
        assert crud.read_series(session=s, run_id=second, name=names.VAL_ACC)[:2] == ([4], [None])
        assert len(crud.read_series(session=s, run_id=first, name=names.TRAIN_LOSS)[0]) == 6  # the source keeps its own


def test_finish_run_refuses_a_non_final_state(submit, settings):
    import pytest

    with pytest.raises(ValueError, match="final state"):
        crud.finish_run(queued_run(submit), names.RUNNING)


WRITER = """
import os, sys
os.environ["SLIMPIPE_DATABASE_URL"] = sys.argv[1]
from backend import crud
run_id = int(sys.argv[2])
for batch in range(20):
    crud.append_metrics(run_id, [(batch * 500 + i, "worker/x", float(i)) for i in range(500)])
    crud.heartbeat(run_id, batch, 20)
"""


def test_a_worker_process_and_the_api_write_to_sqlite_at_the_same_time(tmp_path):
    """SQLite only: WAL and busy_timeout let a training child and the API write together (PostgreSQL just does)."""

    from backend.main import create_app
    from backend.settings import Settings
    from tests.backend.conftest import SPEC, client_for

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    db.migrate(url)
    settings = Settings(database_url=url, broker_dir=tmp_path / "broker", data_root=tmp_path / "data")
    with client_for(create_app(settings)) as api:
        run_id = api.post("/api/v1/experiments", json={"spec": SPEC}).json()["run_ids"][0]
        # The worker's calls without session= use SLIMPIPE_DATABASE_URL, as in a training child.
        writer = subprocess.Popen([sys.executable, "-c", WRITER, url, str(run_id)])
        sent = 0
        while writer.poll() is None or sent < 5_000:
            points = [{"step": sent + i, "name": "api/y", "value": 1.0} for i in range(1000)]
            assert api.post(f"/api/v1/runs/{run_id}/metrics", json={"points": points}).status_code == 202
            sent += 1000
            assert api.get(f"/api/v1/runs/{run_id}").status_code == 200
            time.sleep(0.05)
        assert writer.wait(60) == 0
    with db.session_scope(url) as s:
        counts = {name: len(crud.read_series(session=s, run_id=run_id, name=name)[0]) for name in ("worker/x", "api/y")}
        assert crud.get_run(session=s, run_id=run_id).progress_step == 19
    assert counts == {"worker/x": 10_000, "api/y": sent}
