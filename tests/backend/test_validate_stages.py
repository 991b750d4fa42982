"""The API refuses stage paths the model does not have, with `slimpipe train`'s message, from the trees workers publish."""

import argparse

import pytest
import yaml

from backend import crud, db
from tests.worker.celery_harness import ROOT
from worker import catalog, train_cli

EXAMPLE = yaml.safe_load((ROOT / "examples" / "digits_cnn_topk.yaml").read_text())
WRONG = {**EXAMPLE, "pipeline": {**EXAMPLE["pipeline"], "stages": [["conv1"], ["layer9"]]}}


@pytest.fixture
def published(settings):
    with db.session_scope(settings.database_url) as session:
        return catalog.publish("cpu1@test", ["tiny_mlp", "tiny_cnn"], session=session)


def slimpipe_train_error(tmp_path, capsys, spec) -> str:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    assert train_cli.run(parser.parse_args([str(spec_file), "--no-progress"])) == 2
    return capsys.readouterr().err.strip().removeprefix("slimpipe: ")


def test_validate_refuses_a_wrong_stage_path_with_the_message_of_slimpipe_train(api, published, tmp_path, capsys):
    refused = api.post("/api/v1/specs/validate", json={"spec": WRONG})
    assert refused.status_code == 422
    (error,) = refused.json()["detail"]
    assert error["field"] == "pipeline.stages"
    assert error["message"] == slimpipe_train_error(tmp_path, capsys, WRONG)
    assert "no module 'layer9'" in error["message"] and "valid children: conv1, bn1, act1" in error["message"]
    before = api.get("/api/v1/runs").json()["count"]
    assert api.post("/api/v1/experiments", json={"spec": WRONG}).status_code == 422
    assert api.get("/api/v1/runs").json()["count"] == before  # nothing was stored


def test_validate_checks_slices_and_every_sweep_point(api, published):
    assert api.post("/api/v1/specs/validate", json={"spec": EXAMPLE}).json()["runs"] == 1
    mlp = {"model": {"name": "tiny_mlp"}, "data": {"name": "digits", "batch_size": 32}}
    sliced = {**mlp, "pipeline": {"stages": [["flatten", "fc1", "act1"], ["fc2", "act2", "head[0:1]"]]}}
    refused = api.post("/api/v1/specs/validate", json={"spec": sliced}).json()["detail"][0]
    assert refused["field"] == "pipeline.stages" and "head[0:1] selects none" in refused["message"]
    # Default options: a module holding parameters must be in some stage.
    missing = {**mlp, "pipeline": {"stages": [["flatten", "fc1", "act1"], ["fc2", "act2"]]}}
    refused = api.post("/api/v1/specs/validate", json={"spec": missing}).json()["detail"][0]
    assert "modules head hold parameters but are in no stage" in refused["message"]
    sweep = {"pipeline.stages": [[["flatten", "fc1", "act1"], ["fc2", "act2", "head"]], [["fc1"], ["fc7"]]]}
    refused = api.post("/api/v1/specs/validate", json={"spec": mlp, "sweep": sweep})
    assert refused.status_code == 422 and "no module 'fc7'" in refused.json()["detail"][0]["message"]


def test_models_no_worker_published_a_tree_for_are_left_to_the_worker(api, settings):
    with db.session_scope(settings.database_url) as session:
        crud.publish_catalog("cpu1@test", {"models": {"tiny_cnn": {"tree": None}}}, session=session)  # replaces
        assert crud.model_trees(session=session) == {}
    assert api.post("/api/v1/specs/validate", json={"spec": WRONG}).json()["runs"] == 1
