"""GET /metrics: Prometheus' text format with the runs as SQL holds them and the requests this app answered."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from backend import crud, db
from backend.main import create_app
from backend.models import runs, utcnow
from tests.backend.conftest import client_for


def scrape(api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = api.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def test_runs_queues_and_requests_are_counted(make_settings, tmp_path):
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'own.db'}")  # its own database: exact counts
    db.migrate(settings.database_url)
    with client_for(create_app(settings)) as api:
        spec = {"name": "m", "model": {"name": "tiny_mlp"}, "data": {"name": "digits"}, "train": {"max_steps": 2}}
        ids = api.post("/api/v1/experiments", json={"spec": spec, "sweep": {"train.seed": [1, 2, 3]}}).json()["run_ids"]
        with db.session_scope(settings.database_url) as s:
            crud.claim_run(ids[0], "host", None, session=s)
            s.execute(update(runs).where(runs.c.id == ids[0]).values(heartbeat_at=utcnow() - timedelta(seconds=40)))
            s.execute(update(runs).where(runs.c.id == ids[1]).values(created_at=utcnow() - timedelta(seconds=90)))
        api.get(f"/api/v1/runs/{ids[2]}")
        api.get("/api/v1/runs/999999")
        got = scrape(api)
    assert got[("slimpipe_database_up", ())] == 1.0
    assert got[("process_resident_memory_bytes", ())] > 10e6  # the standard process, Python and GC collectors
    assert {"python_info", "python_gc_collections_total"} <= {name for name, _ in got}
    assert got[("slimpipe_runs", (("queue", "cpu"), ("status", "queued")))] == 2.0
    assert got[("slimpipe_runs", (("queue", "cpu"), ("status", "running")))] == 1.0
    assert got[("slimpipe_runs", (("queue", "gpu"), ("status", "succeeded")))] == 0.0  # every pair, so alerts see 0
    assert 89 <= got[("slimpipe_queued_oldest_age_seconds", (("queue", "cpu"),))] < 120
    assert 39 <= got[("slimpipe_running_heartbeat_oldest_age_seconds", ())] < 70
    route = "/api/v1/runs/{run_id}"
    assert got[("slimpipe_http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))] == 1.0
    assert got[("slimpipe_http_requests_total", (("method", "GET"), ("route", route), ("status", "404")))] == 1.0
    created = (("method", "POST"), ("route", "/api/v1/experiments"), ("status", "201"))
    assert got[("slimpipe_http_requests_total", created)] == 1.0
    timed = (("method", "POST"), ("route", "/api/v1/experiments"))
    assert got[("slimpipe_http_request_duration_seconds_count", timed)] == 1.0


def test_metrics_need_the_token_and_say_when_the_database_is_down(make_settings):
    with client_for(create_app(make_settings(api_token="s3cret"))) as api:
        assert api.get("/metrics").status_code == 401
        assert api.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    away = make_settings(database_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    with client_for(create_app(away)) as api:
        got = scrape(api)
    assert got[("slimpipe_database_up", ())] == 0.0
    assert not any(name == "slimpipe_runs" for name, _ in got)
