from typing import Any

import pytest
from sqlalchemy import select

from backend import db
from backend.models import Experiment, Run
from slimpipe import names
from slimpipe.spec import set_path
from tests.backend.conftest import SPEC, client_for, queued_messages


def test_submit_writes_experiment_and_queued_run_then_sends_the_task(api, submit, settings):
    created = submit(tags=["seed"])
    assert len(created["run_ids"]) == 1
    run_id = created["run_ids"][0]
    with db.session_scope(settings.database_url) as session:
        experiment = session.get(Experiment, created["experiment_id"])
        run = session.get(Run, run_id)
        assert experiment.name == "digits-mlp"
        assert experiment.spec == SPEC
        assert run.status == names.QUEUED
        assert run.queue == names.QUEUE_CPU
        assert run.tags == ["seed"]
        assert run.attempt == 1
        # The run keeps the validated spec with every default filled in.
        assert run.spec["pipeline"]["schedule"] == "gpipe"
        assert run.spec["compression"]["default"]["forward"]["topk"] is None
        assert run.celery_id
    assert queued_messages(settings.broker_dir) == [{"task": names.TASK_RUN_EXPERIMENT, "args": [run_id], "queue": "cpu"}]


def test_sweep_gives_one_run_per_grid_point(api, submit, settings):
    sweep = {"compression.default.backward.topk": [1, 0.8, 0.6, 0.5, 0.4], "compression.default.forward.bits": [8, 4]}
    created = submit(sweep=sweep)
    assert len(created["run_ids"]) == 10
    runs = [api.get(f"/api/v1/runs/{i}").json() for i in created["run_ids"]]
    points = [(r["sweep_values"]["compression.default.backward.topk"], r["sweep_values"]["compression.default.forward.bits"]) for r in runs]
    assert points == [(k, b) for k in [1, 0.8, 0.6, 0.5, 0.4] for b in [8, 4]]
    for run in runs:
        values = run["sweep_values"]
        assert run["spec"]["compression"]["default"]["backward"]["topk"] == values["compression.default.backward.topk"]
        assert run["spec"]["compression"]["default"]["forward"]["bits"] == values["compression.default.forward.bits"]
    assert runs[3]["name"] == "digits-mlp backward.topk=0.8 forward.bits=4"
    assert sorted(m["args"][0] for m in queued_messages(settings.broker_dir)) == created["run_ids"]
    experiment = api.get(f"/api/v1/experiments/{created['experiment_id']}").json()
    assert experiment["run_ids"] == created["run_ids"]
    assert experiment["sweep"] == sweep


def test_cuda_specs_go_to_the_gpu_queue_and_queue_can_be_chosen(api, submit, settings):
    gpu = submit(set_path(SPEC, "train.device", "cuda"))
    cpu = submit(set_path(SPEC, "train.device", "cuda"), queue="cpu")
    assert api.get(f"/api/v1/runs/{gpu['run_ids'][0]}").json()["queue"] == "gpu"
    assert api.get(f"/api/v1/runs/{cpu['run_ids'][0]}").json()["queue"] == "cpu"


@pytest.mark.parametrize(
    "body, field, words",
    [
        ({"spec": set_path(SPEC, "model.name", "vgg")}, "model.name", "choose one of"),
        ({"spec": set_path(SPEC, "compression.default.forward.bits", 17)}, "compression.default.forward.bits", "less than or equal to 16"),
        ({"spec": set_path(SPEC, "pipeline.stages", [["fc1"], ["layers[0:"]])}, "pipeline.stages", "layers[0:3]"),
        ({"spec": set_path(SPEC, "optim.bogus", 1)}, "optim.bogus", "not a known field"),
        ({"spec": {**SPEC, "train": {"eval_every": 5}}}, "train", "max_steps"),
        ({"spec": SPEC, "sweep": {"compression.default.backward.topk": [0.5, 0]}}, "compression.default.backward.topk", "greater than 0"),
        ({"spec": SPEC, "sweep": {"compression.default.backward.topk": []}}, "compression.default.backward.topk", "non-empty list"),
        ({"spec": SPEC, "queue": "tpu"}, "queue", "use one of cpu, gpu"),
        ({"spec": SPEC, "sweep": {"link.latency_ms": list(range(40)), "optim.lr": [0.1] * 40}}, "sweep", "at most 1000"),
        ({"sweep": None}, "spec", "is required"),
        ({"spec": set_path(SPEC, "data", {"name": "image_folder", "options": {"path": "/etc"}})}, "data.options.path", "outside SLIMPIPE_DATA_ROOT"),
        ({"spec": set_path(SPEC, "data", {"name": "glue", "options": {"path": "../../secrets"}})}, "data.options.path", "outside SLIMPIPE_DATA_ROOT"),
        ({"spec": set_path(SPEC, "model", {"name": "hf_classifier", "options": {"pretrained": "/root/model"}})}, "model.options.pretrained", "outside"),
    ],
)
def test_invalid_submission_is_422_naming_the_field_and_queues_nothing(api, settings, body, field, words):
    before = api.get("/api/v1/runs").json()["count"]
    response = api.post("/api/v1/experiments", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [d["field"] for d in detail] == [field]
    assert words in detail[0]["message"]
    assert api.get("/api/v1/runs").json()["count"] == before
    assert queued_messages(settings.broker_dir) == []


def test_data_paths_inside_data_root_are_accepted(api, submit, settings):
    (settings.data_root / "cub").mkdir(parents=True)
    absolute = set_path(SPEC, "data", {"name": "image_folder", "options": {"path": str(settings.data_root / "cub")}})
    relative = set_path(SPEC, "data", {"name": "text_file", "options": {"train": "cub/train.csv"}})
    hub_id = set_path(SPEC, "model", {"name": "hf_classifier", "options": {"pretrained": "FacebookAI/roberta-base"}})
    for spec in (absolute, relative, hub_id):
        assert len(submit(spec)["run_ids"]) == 1


def test_validate_counts_runs_without_submitting(api):
    before = api.get("/api/v1/runs").json()["count"]
    body: dict[str, Any] = {"spec": SPEC, "sweep": {"compression.default.backward.topk": [1, 0.5, 0.1]}}
    assert api.post("/api/v1/specs/validate", json=body).json() == {"ok": True, "runs": 3}
    bad = api.post("/api/v1/specs/validate", json={"spec": set_path(SPEC, "link.bandwidth_mbps", -1)})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["field"] == "link.bandwidth_mbps"
    assert api.get("/api/v1/runs").json()["count"] == before


def test_unreachable_broker_is_503_and_the_committed_runs_fail_with_the_reason(make_settings):

    from backend.main import create_app

    settings = make_settings(broker_url="redis://127.0.0.1:1/0")
    with client_for(create_app(settings)) as api:
        response = api.post("/api/v1/experiments", json={"spec": SPEC})
        assert response.status_code == 503
        assert "did not take the task" in response.json()["detail"]
        run = api.get("/api/v1/runs", params={"limit": 1}).json()["data"][0]
    assert run["status"] == names.FAILED
    assert run["error"].startswith("could not queue")


def test_experiments_list_and_404(api, submit):
    created = submit()
    listed = api.get("/api/v1/experiments").json()
    assert listed["count"] >= 1
    mine = next(e for e in listed["data"] if e["id"] == created["experiment_id"])
    assert mine["run_ids"] == created["run_ids"]
    assert mine["created_at"].endswith(("Z", "+00:00"))
    missing = api.get("/api/v1/experiments/999999")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "experiment 999999 not found"}


def test_runs_are_committed_before_their_task_is_sent(api, submit, settings):
    # A worker that receives the id must find the row: every queued message names an existing run.
    created = submit(sweep={"link.bandwidth_mbps": [10, 100]})
    with db.session_scope(settings.database_url) as session:
        for message in queued_messages(settings.broker_dir):
            assert session.scalar(select(Run.status).where(Run.id == message["args"][0])) == names.QUEUED
    assert len(created["run_ids"]) == 2


def test_submit_over_redis_puts_the_task_on_the_cpu_list(make_settings, redis_server):
    import json as jsonlib

    import redis

    from backend.main import create_app

    settings = make_settings(broker_url=redis_server.url(5))
    broker = redis.Redis.from_url(redis_server.url(5))
    broker.flushdb()
    with client_for(create_app(settings)) as api:
        assert api.get("/readyz").json() == {"database": True, "broker": True}
        run_ids = api.post("/api/v1/experiments", json={"spec": SPEC, "sweep": {"link.latency_ms": [1, 5]}}).json()["run_ids"]
        messages = [jsonlib.loads(m) for m in broker.lrange("cpu", 0, -1)]
        assert sorted(m["headers"]["argsrepr"] for m in messages) == sorted(f"[{i}]" for i in run_ids)
        assert {m["headers"]["task"] for m in messages} == {names.TASK_RUN_EXPERIMENT}
        # Cancelling a queued run revokes its task (a broadcast on Redis) and ends the run at once.
        assert api.post(f"/api/v1/runs/{run_ids[0]}/cancel").json()["status"] == names.CANCELLED
