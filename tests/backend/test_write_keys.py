"""Writes sent again under their `Idempotency-Key` (the answer lost) are answered as the first time and stored once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from backend import crud, db
from backend.main import create_app
from backend.models import Experiment, MetricPoint, Run, WriteKey, utcnow
from slimpipe import names
from tests.backend.conftest import SPEC, client_for, queued_messages

KEY = names.IDEMPOTENCY_HEADER
REPLAYED = "Idempotent-Replayed"


def _count(settings, column, *where) -> int:
    with db.session_scope(settings.database_url) as session:
        return int(session.scalar(select(func.count(column)).where(*where)))


def _points(first: int, n: int) -> dict:
    return {"points": [{"step": s, "name": "train/loss", "value": 1.0 / s, "time": 1.7e9 + s} for s in range(first, first + n)]}


def test_a_metric_batch_sent_again_under_its_key_is_stored_once(api, submit, settings):
    first, second = submit(sweep={"train.seed": [1, 2]})["run_ids"]
    path = f"/api/v1/runs/{first}/metrics"
    sent = api.post(path, json=_points(1, 3), headers={KEY: "batch-1"})
    assert (sent.status_code, sent.json(), REPLAYED in sent.headers) == (202, {"accepted": 3}, False)
    again = api.post(path, json=_points(1, 3), headers={KEY: "batch-1"})
    assert (again.status_code, again.json(), again.headers[REPLAYED]) == (202, {"accepted": 3}, "true")
    assert api.post(path, json=_points(4, 2), headers={KEY: "batch-2"}).json() == {"accepted": 2}
    assert api.get(path).json()["series"]["train/loss"]["step"] == [1, 2, 3, 4, 5]  # each once

    # A key matches only the same run's metrics; without a key every post is stored, as before.
    assert REPLAYED not in api.post(f"/api/v1/runs/{second}/metrics", json=_points(1, 3), headers={KEY: "batch-1"}).headers
    api.post(f"/api/v1/runs/{second}/metrics", json=_points(1, 3))
    assert _count(settings, MetricPoint.id, MetricPoint.run_id == second) == 6


def test_a_submission_sent_again_under_its_key_gives_the_same_runs_queued_once(api, settings):
    body = {"spec": SPEC, "sweep": {"train.seed": [1, 2]}}
    experiments, runs = _count(settings, Experiment.id), _count(settings, Run.id)
    created = api.post("/api/v1/experiments", json=body, headers={KEY: "submit-1"})
    assert created.status_code == 201 and REPLAYED not in created.headers
    again = api.post("/api/v1/experiments", json=body, headers={KEY: "submit-1"})
    assert (again.status_code, again.json(), again.headers[REPLAYED]) == (201, created.json(), "true")
    assert (_count(settings, Experiment.id), _count(settings, Run.id)) == (experiments + 1, runs + 2)
    assert sorted(m["args"][0] for m in queued_messages(settings.broker_dir)) == created.json()["run_ids"]

    other = api.post("/api/v1/experiments", json=body, headers={KEY: "submit-2"})
    assert other.json()["experiment_id"] != created.json()["experiment_id"]


def test_a_retry_sent_again_under_its_key_makes_one_run(api, submit, settings):
    run_id = submit()["run_ids"][0]
    assert api.post(f"/api/v1/runs/{run_id}/cancel").json()["status"] == names.CANCELLED
    runs = _count(settings, Run.id)
    made = api.post(f"/api/v1/runs/{run_id}/retry", headers={KEY: "retry-1"})
    assert made.status_code == 201 and REPLAYED not in made.headers
    again = api.post(f"/api/v1/runs/{run_id}/retry", headers={KEY: "retry-1"})
    assert (again.status_code, again.headers[REPLAYED]) == (201, "true")
    assert again.json()["id"] == made.json()["id"] and again.json()["retry_of"] == run_id
    assert _count(settings, Run.id) == runs + 1
    assert sum(m["args"] == [made.json()["id"]] for m in queued_messages(settings.broker_dir)) == 1  # queued once
    assert api.post(f"/api/v1/runs/{run_id}/retry").json()["id"] != made.json()["id"]  # no key: a new retry


@pytest.mark.parametrize(
    ("key", "why"),
    [("", "at least 1 character"), ("k" * 65, "at most 64 characters"), ("two words", "should match pattern")],
)
def test_a_bad_key_is_422_naming_the_header(api, submit, key, why):
    run_id = submit()["run_ids"][0]
    answer = api.post(f"/api/v1/runs/{run_id}/metrics", json=_points(1, 1), headers={KEY: key})
    assert answer.status_code == 422
    [problem] = answer.json()["detail"]
    assert problem["field"] == KEY and why in problem["message"]
    assert api.get(f"/api/v1/runs/{run_id}/metrics").json()["series"] == {}  # nothing stored


def test_a_key_sent_again_with_another_write_is_422_and_stores_nothing(api, submit, settings):
    run_id = submit()["run_ids"][0]
    path = f"/api/v1/runs/{run_id}/metrics"
    assert api.post(path, json=_points(1, 2), headers={KEY: "once"}).status_code == 202
    reused = api.post(path, json=_points(3, 2), headers={KEY: "once"})
    assert reused.status_code == 422
    assert reused.json()["detail"] == [
        {"field": KEY, "message": "'once' was used for a different write before; give each write a key of its own"}
    ]
    assert api.get(path).json()["series"]["train/loss"]["step"] == [1, 2]

    runs = _count(settings, Run.id)
    assert api.post("/api/v1/experiments", json={"spec": SPEC}, headers={KEY: "exp-once"}).status_code == 201
    other = {"spec": {**SPEC, "name": "another"}}
    assert api.post("/api/v1/experiments", json=other, headers={KEY: "exp-once"}).status_code == 422
    assert _count(settings, Run.id) == runs + 1


def test_the_same_key_sent_twice_at_once_queues_one_experiment(settings):
    """The second request passes the check before the first commits; its commit then fails on the key and it
    answers with the first one's runs (on PostgreSQL it waits on the key's row; SQLite takes one writer)."""
    app = create_app(settings)
    runs = _count(settings, Run.id)
    answers: list = []
    go = threading.Barrier(4)

    def post() -> None:
        with client_for(app) as api:
            go.wait()
            answers.append(api.post("/api/v1/experiments", json={"spec": SPEC}, headers={KEY: "at-once"}))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [a.status_code for a in answers] == [201] * 4
    assert len({a.text for a in answers}) == 1
    assert sorted(a.headers.get(REPLAYED, "") for a in answers) == ["", "true", "true", "true"]
    assert _count(settings, Run.id) == runs + 1 and len(queued_messages(settings.broker_dir)) == 1


def test_a_submission_that_could_not_be_queued_forgets_its_key(make_settings, tmp_path):
    """503 with the runs failed as `could not queue`: the same key sent again queues anew, once the broker is back."""
    broken = make_settings(broker_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    with client_for(create_app(broken)) as api:
        refused = api.post("/api/v1/experiments", json={"spec": SPEC}, headers={KEY: "retry-me"})
    assert refused.status_code == 503
    with client_for(create_app(make_settings())) as api:
        queued = api.post("/api/v1/experiments", json={"spec": SPEC}, headers={KEY: "retry-me"})
        assert queued.status_code == 201 and REPLAYED not in queued.headers
        [run_id] = queued.json()["run_ids"]
        assert api.get(f"/api/v1/runs/{run_id}").json()["status"] == names.QUEUED


def test_keys_go_with_their_run_and_after_a_day(api, submit, settings):
    kept, deleted = submit(sweep={"train.seed": [1, 2]})["run_ids"]
    with db.session_scope(settings.database_url) as session:
        for run_id in (kept, deleted):
            crud.append_metrics(run_id, [(1, "x", 1.0)], key="k", session=session)
            crud.append_logs(run_id, ["line"], key="k", session=session)
    assert api.delete(f"/api/v1/runs/{deleted}").status_code == 204
    theirs = select(WriteKey.scope).where(WriteKey.scope.in_([f"runs/{r}/{k}" for r in (kept, deleted) for k in ("metrics", "logs")]))
    with db.session_scope(settings.database_url) as session:
        assert sorted(session.scalars(theirs)) == [f"runs/{kept}/logs", f"runs/{kept}/metrics"]
        a_day_ago = utcnow() - timedelta(seconds=WriteKey.KEEP_S + 60)
        session.execute(update(WriteKey).where(WriteKey.scope == f"runs/{kept}/logs").values(created_at=a_day_ago))
    with db.session_scope(settings.database_url) as session:
        assert crud.prune_write_keys(session=session) == 1
    with db.session_scope(settings.database_url) as session:
        assert list(session.scalars(theirs)) == [f"runs/{kept}/metrics"]
