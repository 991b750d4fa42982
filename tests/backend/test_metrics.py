import csv
import io
import json
import math
import threading
import time

import yaml

from backend import crud, db
from slimpipe import names


def post_points(api, run_id, points):
    response = api.post(f"/api/v1/runs/{run_id}/metrics", json={"points": points})
    assert response.status_code == 202, response.text
    return response.json()


def test_ingest_and_read_back_exact_values(api, submit):
    run_id = submit()["run_ids"][0]
    points = [{"step": s, "name": "train/loss", "value": 2.0 / (s + 1), "time": 1700000000.0 + s} for s in range(50)]
    points += [{"step": s, "name": "val/acc", "value": float(s)} for s in range(0, 50, 10)]
    assert post_points(api, run_id, points) == {"accepted": 55}
    body = api.get(f"/api/v1/runs/{run_id}/metrics").json()
    assert body["run_id"] == run_id and body["last_step"] == 49
    loss = body["series"]["train/loss"]
    assert loss["step"] == list(range(50))
    assert loss["value"] == [2.0 / (s + 1) for s in range(50)]
    assert loss["time"] == [1700000000.0 + s for s in range(50)]
    assert body["series"]["val/acc"]["value"] == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert all(abs(t - time.time()) < 60 for t in body["series"]["val/acc"]["time"])  # default: received now
    assert api.get(f"/api/v1/runs/{run_id}/metric-names").json() == ["train/loss", "val/acc"]

    only = api.get(f"/api/v1/runs/{run_id}/metrics", params={"names": "val/acc", "since_step": 15}).json()
    assert list(only["series"]) == ["val/acc"]
    assert only["series"]["val/acc"]["step"] == [20, 30, 40]


def test_bad_points_are_422_and_unknown_run_404(api, submit):
    run_id = submit()["run_ids"][0]
    bad = api.post(f"/api/v1/runs/{run_id}/metrics", json={"points": [{"step": -1, "name": "x", "value": 1}]})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["field"] == "points.0.step"
    assert api.post("/api/v1/runs/999999/metrics", json={"points": []}).status_code == 404
    assert api.get("/api/v1/runs/999999/metrics").status_code == 404


def test_downsampling_keeps_first_last_and_extremes(api, submit):
    run_id = submit()["run_ids"][0]
    n = 10_000
    values = [math.sin(s / 300.0) for s in range(n)]
    values[7_777] = 50.0  # a spike LTTB alone could miss
    values[2_345] = -40.0
    post_points(api, run_id, [{"step": s, "name": "train/loss", "value": v} for s, v in enumerate(values)])
    series = api.get(f"/api/v1/runs/{run_id}/metrics", params={"max_points": 500}).json()["series"]["train/loss"]
    assert len(series["step"]) <= 500
    assert len(series["step"]) >= 450
    assert series["step"][0] == 0 and series["step"][-1] == n - 1
    assert series["step"] == sorted(series["step"])
    assert max(series["value"]) == 50.0 and series["step"][series["value"].index(50.0)] == 7_777
    assert min(series["value"]) == -40.0 and series["step"][series["value"].index(-40.0)] == 2_345
    # Kept points are real points, not averages.
    assert all(values[s] == v for s, v in zip(series["step"], series["value"], strict=True))
    full = api.get(f"/api/v1/runs/{run_id}/metrics", params={"max_points": n}).json()["series"]["train/loss"]
    assert full["step"] == list(range(n))


def test_non_finite_values_from_the_worker_are_stored_as_null(api, submit, settings):
    run_id = submit()["run_ids"][0]
    with db.session_scope(settings.database_url) as session:
        crud.append_metrics(run_id, [(0, "train/loss", 1.5), (1, "train/loss", float("nan")), (2, "train/loss", math.inf)], session=session)
    series = api.get(f"/api/v1/runs/{run_id}/metrics").json()["series"]["train/loss"]
    assert series["value"] == [1.5, None, None]


def test_csv_jsonl_spec_and_log_downloads(api, submit, settings):
    run_id = submit()["run_ids"][0]
    post_points(api, run_id, [{"step": 2, "name": "b", "value": 0.5, "time": 10.0}, {"step": 1, "name": "a", "value": 1.25, "time": 9.0}])
    with db.session_scope(settings.database_url) as session:
        crud.append_logs(run_id, ["first line", ("WARNING", "second line")], session=session)

    response = api.get(f"/api/v1/runs/{run_id}/metrics.csv")
    assert response.headers["content-disposition"] == f'attachment; filename="run-{run_id}-metrics.csv"'
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows == [["step", "name", "value", "time"], ["1", "a", "1.25", "9.0"], ["2", "b", "0.5", "10.0"]]

    response = api.get(f"/api/v1/runs/{run_id}/metrics.jsonl")
    assert response.headers["content-disposition"] == f'attachment; filename="run-{run_id}-metrics.jsonl"'
    assert [json.loads(line) for line in response.text.splitlines()] == [
        {"step": 1, "name": "a", "value": 1.25, "time": 9.0},
        {"step": 2, "name": "b", "value": 0.5, "time": 10.0},
    ]

    response = api.get(f"/api/v1/runs/{run_id}/spec.yaml")
    assert response.headers["content-disposition"] == f'attachment; filename="run-{run_id}-spec.yaml"'
    assert yaml.safe_load(response.text) == api.get(f"/api/v1/runs/{run_id}").json()["spec"]

    response = api.get(f"/api/v1/runs/{run_id}/logs")
    assert response.headers["content-disposition"] == f'attachment; filename="run-{run_id}.log"'
    lines = response.text.splitlines()
    assert lines[0].endswith(" INFO first line") and lines[1].endswith(" WARNING second line")

    as_json = api.get(f"/api/v1/runs/{run_id}/logs", params={"format": "json"}).json()["lines"]
    assert [(x["level"], x["message"]) for x in as_json] == [("INFO", "first line"), ("WARNING", "second line")]
    newer = api.get(f"/api/v1/runs/{run_id}/logs", params={"format": "json", "since_id": as_json[0]["id"]}).json()
    assert [x["message"] for x in newer["lines"]] == ["second line"]


def read_events(response):
    events, event, data = [], "message", []
    for line in response.iter_lines():
        if not line:
            if data:
                events.append((event, json.loads("\n".join(data))))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    return events


def test_event_stream_sends_metrics_logs_and_status_until_the_run_ends(api, submit, settings):
    run_id = submit()["run_ids"][0]
    url = settings.database_url

    def train():
        # What a worker does, from another thread, while the stream is open.
        with db.session_scope(url) as session:
            crud.claim_run(run_id, "host", "c1", session=session)
        for step in range(1, 4):
            time.sleep(0.3)
            with db.session_scope(url) as session:
                crud.append_metrics(run_id, [(step, names.TRAIN_LOSS, 1.0 / step)], session=session)
                crud.heartbeat(run_id, step, 3, session=session)
        with db.session_scope(url) as session:
            crud.append_logs(run_id, ["done training"], session=session)
            crud.finish_run(run_id, names.SUCCEEDED, summary={"final_val_acc": 91.0}, session=session)

    worker = threading.Thread(target=train)
    worker.start()
    with api.stream("GET", f"/api/v1/runs/{run_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response)
    worker.join()

    points = [(p["step"], p["value"]) for kind, data in events if kind == "metrics" for p in data["points"]]
    assert points == [(1, 1.0), (2, 0.5), (3, 1.0 / 3)]
    logs = [line["message"] for kind, data in events if kind == "log" for line in data["lines"]]
    assert logs == ["done training"]
    statuses = [data for kind, data in events if kind == "status"]
    assert statuses[0]["status"] in ("queued", "running")
    assert statuses[-1]["status"] == "succeeded" and statuses[-1]["summary"] == {"final_val_acc": 91.0}
    assert events[-1][0] == "status"  # everything else was sent before the final status
    assert "spec" not in statuses[-1]


def test_event_stream_of_a_finished_run_replays_and_ends(api, submit, settings):
    run_id = submit()["run_ids"][0]
    post_points(api, run_id, [{"step": s, "name": "x", "value": s} for s in range(12_000)])
    api.post(f"/api/v1/runs/{run_id}/cancel")
    with api.stream("GET", f"/api/v1/runs/{run_id}/events") as response:
        events = read_events(response)
    steps = [p["step"] for kind, data in events if kind == "metrics" for p in data["points"]]
    assert steps == list(range(12_000))
    assert [e for e, _ in events].count("status") == 1 and events[-1][1]["status"] == "cancelled"


def test_event_stream_resumes_after_last_event_id(api, submit):
    run_id = submit()["run_ids"][0]
    post_points(api, run_id, [{"step": s, "name": "x", "value": s} for s in range(5)])
    api.post(f"/api/v1/runs/{run_id}/cancel")
    with api.stream("GET", f"/api/v1/runs/{run_id}/events") as response:
        ids = [line[3:].strip() for line in response.iter_lines() if line.startswith("id:")]
    post_points(api, run_id, [{"step": s, "name": "x", "value": s} for s in range(5, 8)])
    for resume in ({"headers": {"Last-Event-ID": ids[-1]}}, {"params": {"cursor": ids[-1]}}):
        with api.stream("GET", f"/api/v1/runs/{run_id}/events", **resume) as response:
            events = read_events(response)
        assert [p["step"] for kind, data in events if kind == "metrics" for p in data["points"]] == [5, 6, 7]
