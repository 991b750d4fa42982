import pytest
from sqlalchemy import update

from backend import crud, db, runfiles
from backend.models import runs, utcnow
from slimpipe import names
from tests.backend.conftest import SPEC


def test_get_run_has_the_contract_fields(api, submit):
    run_id = submit()["run_ids"][0]
    run = api.get(f"/api/v1/runs/{run_id}").json()
    expected = {
        "id", "experiment_id", "name", "sweep_values", "spec", "status", "queue", "worker_host", "celery_id",
        "attempt", "retry_of", "heartbeat_at", "created_at", "started_at", "finished_at", "error", "traceback",
        "progress_step", "progress_total", "summary", "tags", "notes", "compression",
    }  # fmt: skip
    assert set(run) == expected
    assert run["status"] == "queued" and run["started_at"] is None and run["summary"] is None
    listed = api.get("/api/v1/runs", params={"experiment_id": run["experiment_id"]}).json()
    assert listed["count"] == 1
    assert not {"spec", "traceback", "notes"} & set(listed["data"][0])
    assert api.get("/api/v1/runs/999999").status_code == 404


def test_list_filters_by_status_experiment_and_tag_newest_first_paginated(api, submit, settings):
    first = submit(sweep={"link.bandwidth_mbps": [1, 2, 3]}, tags=["alpha"])
    second = submit(tags=["beta"])
    running = first["run_ids"][1]
    with db.session_scope(settings.database_url) as session:
        assert crud.claim_run(running, "host-a", "celery-1", session=session)

    page = api.get("/api/v1/runs", params={"experiment_id": first["experiment_id"], "limit": 2}).json()
    assert page["count"] == 3
    assert [r["id"] for r in page["data"]] == sorted(first["run_ids"], reverse=True)[:2]
    page2 = api.get("/api/v1/runs", params={"experiment_id": first["experiment_id"], "limit": 2, "offset": 2}).json()
    assert [r["id"] for r in page2["data"]] == [min(first["run_ids"])]

    by_status = api.get("/api/v1/runs", params={"experiment_id": first["experiment_id"], "status": "running"}).json()
    assert [r["id"] for r in by_status["data"]] == [running]
    assert by_status["data"][0]["worker_host"] == "host-a"

    tagged = api.get("/api/v1/runs", params={"tag": "beta"}).json()
    assert second["run_ids"][0] in [r["id"] for r in tagged["data"]]
    assert not set(first["run_ids"]) & {r["id"] for r in tagged["data"]}

    bad = api.get("/api/v1/runs", params={"status": "sleeping"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "status"


def test_list_searches_name_tags_and_spec_and_sorts_by_summary_figures(api, submit, settings):
    topk = {
        **SPEC,
        "name": "Needle-topk",
        "data": {**SPEC["data"], "batch_size": 17},
        "compression": {"default": {"backward": {"topk": 0.1, "bits": 8}}},
    }
    sparse = submit(topk, sweep={"optim.lr": [0.1, 0.2]}, tags=["study-A_1"])["run_ids"]
    dense = submit({**SPEC, "name": "haystack"}, tags=["other%"])["run_ids"]
    accuracy = {sparse[0]: 71.5, sparse[1]: 90.25, dense[0]: 80.0}
    with db.session_scope(settings.database_url) as session:
        for run_id, acc in accuracy.items():
            crud.claim_run(run_id, "host", None, session=session)
            crud.finish_run(run_id, names.SUCCEEDED, summary={"best_val_acc": acc}, session=session)

    def ids(**params):
        body = api.get("/api/v1/runs", params={"limit": 500, **params}).json()
        return [r["id"] for r in body["data"]], body["count"]

    assert ids(q="needle") == (sorted(sparse, reverse=True), 2)  # name, any case
    assert ids(q="haystack")[0] == dense
    # spec text (the session's database also holds the fuzzer's runs, whose specs may say 170 or 1700)
    assert set(ids(q='"batch_size": 17')[0]) & {*sparse, *dense} == set(sparse)
    assert ids(tag="STUDY-a")[0] == sorted(sparse, reverse=True)  # substring of a tag
    assert ids(tag="other%")[0] == dense and ids(tag="r%x")[1] == 0  # LIKE wildcards are plain characters
    mine = {*sparse, *dense}
    by_acc = [i for i in ids(sort="-best_val_acc")[0] if i in mine]
    assert by_acc == [sparse[1], dense[0], sparse[0]]
    assert [i for i in ids(sort="best_val_acc")[0] if i in mine] == [sparse[0], dense[0], sparse[1]]
    assert [i for i in ids(sort="name", q="e")[0] if i in mine][:1] == [dense[0]]  # "haystack" < "needle-topk"

    listed = api.get("/api/v1/runs", params={"q": "needle", "limit": 1}).json()["data"][0]
    assert listed["compression"] == {"forward": "dense", "backward": "top-k 10% · 8-bit"}
    bad = api.get("/api/v1/runs", params={"sort": "accuracy"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "sort"
    assert "best_val_acc" in bad.json()["detail"][0]["message"]
    assert api.get("/api/v1/runs", params={"q": "x" * 201}).json()["detail"][0]["field"] == "q"


def test_cancel_queued_run_is_final_at_once(api, submit, settings):
    run_id = submit()["run_ids"][0]
    run = api.post(f"/api/v1/runs/{run_id}/cancel").json()
    assert run["status"] == names.CANCELLED
    assert run["finished_at"] is not None
    # A worker that still gets the message cannot start it.
    with db.session_scope(settings.database_url) as session:
        assert crud.claim_run(run_id, "host", "c", session=session) is False


def test_cancel_running_run_sets_the_flag_the_child_checks(api, submit, settings):
    run_id = submit()["run_ids"][0]
    with db.session_scope(settings.database_url) as session:
        assert crud.claim_run(run_id, "host", "c1", session=session)
    run = api.post(f"/api/v1/runs/{run_id}/cancel").json()
    assert run["status"] == names.RUNNING  # the child stops within a step and writes the final state
    with db.session_scope(settings.database_url) as session:
        assert crud.is_cancel_requested(run_id, session=session)
        assert crud.heartbeat(run_id, 3, 10, session=session) is True


def test_retry_makes_a_new_attempt_of_the_same_spec(api, submit, settings):
    run_id = submit(sweep={"compression.default.backward.topk": [0.5]})["run_ids"][0]
    assert api.post(f"/api/v1/runs/{run_id}/retry").status_code == 409  # still queued
    with db.session_scope(settings.database_url) as session:
        crud.claim_run(run_id, "host", "c1", session=session)
        crud.finish_run(run_id, names.FAILED, error="worker lost", session=session)
    response = api.post(f"/api/v1/runs/{run_id}/retry")
    assert response.status_code == 201
    retry = response.json()
    original = api.get(f"/api/v1/runs/{run_id}").json()
    assert retry["id"] != run_id
    assert retry["retry_of"] == run_id
    assert retry["attempt"] == 2
    assert retry["status"] == names.QUEUED
    assert retry["spec"] == original["spec"]
    assert retry["sweep_values"] == {"compression.default.backward.topk": 0.5}
    assert retry["celery_id"]


def test_delete_removes_run_metrics_and_logs(api, submit, settings):
    run_id, other = submit()["run_ids"][0], submit()["run_ids"][0]
    api.post(f"/api/v1/runs/{run_id}/metrics", json={"points": [{"step": 1, "name": "train/loss", "value": 1.0}]})
    for folder in (runfiles.run_dir(run_id, settings), runfiles.run_dir(other, settings)):  # a worker sharing the folder
        folder.mkdir(parents=True)
        (folder / "checkpoint.pt").write_bytes(b"weights")
    with db.session_scope(settings.database_url) as session:
        crud.append_logs(run_id, ["hello"], session=session)
    assert api.delete(f"/api/v1/runs/{run_id}").status_code == 204
    assert api.get(f"/api/v1/runs/{run_id}").status_code == 404
    with db.session_scope(settings.database_url) as session:
        assert crud.read_series(session=session, run_id=run_id, name="train/loss") == ([], [], [])
        assert crud.read_logs(session=session, run_id=run_id) == []
        # A training child of a deleted run is told to stop.
        assert crud.is_cancel_requested(run_id, session=session) is True
    assert not runfiles.run_dir(run_id, settings).exists()
    assert (runfiles.run_dir(other, settings) / "checkpoint.pt").exists()
    assert api.delete(f"/api/v1/runs/{run_id}").status_code == 404


def test_spec_is_kept_per_run(api, submit):
    run_id = submit()["run_ids"][0]
    assert api.get(f"/api/v1/runs/{run_id}").json()["spec"]["model"] == {"name": SPEC["model"]["name"], "options": {}}


def test_compression_labels_name_a_fixed_step_in_standard_deviations():
    from backend.specs import describe_compression
    from slimpipe.spec import CompressionSpec

    assert describe_compression(CompressionSpec(bits=8, step_std=0.7, entropy="ans")) == "step 0.7σ · ans"
    assert describe_compression(CompressionSpec(bits=8, rate=1.5, entropy="ans")) == "1.5 bits/value · ans"
    assert describe_compression(CompressionSpec(bits=8, rate=1.0, entropy="ans")) == "1 bit/value · ans"
    assert describe_compression(CompressionSpec(topk=0.1, bits=4)) == "top-k 10% · 4-bit"


def test_the_live_eta_is_shown_while_running_and_never_once_the_run_ended(api, submit, settings):
    run_id = submit()["run_ids"][0]
    with db.session_scope(settings.database_url) as s:
        crud.claim_run(run_id, "h", "t", session=s)
        crud.update_summary(run_id, {names.SUMMARY_ETA_S: 42.0, names.SUMMARY_ETA_AT: 1.7e9, "steps": 3}, session=s)
    running = api.get(f"/api/v1/runs/{run_id}").json()
    assert running["summary"][names.SUMMARY_ETA_S] == 42.0
    with db.session_scope(settings.database_url) as s:  # a lost worker (as crud.mark_lost_runs ends it): no final summary
        s.execute(update(runs).where(runs.c.id == run_id).values(status=names.FAILED, finished_at=utcnow(), error="lost"))
    ended = api.get(f"/api/v1/runs/{run_id}").json()
    listed = api.get("/api/v1/runs").json()["data"]
    assert ended["status"] == names.FAILED and ended["summary"] == {"steps": 3}
    assert next(r for r in listed if r["id"] == run_id)["summary"] == {"steps": 3}


def test_checkpoint_downloads_as_a_tar_of_the_runs_checkpoint_files(api, submit, settings):
    import io
    import os
    import tarfile

    run_id = submit()["run_ids"][0]
    missing = api.get(f"/api/v1/runs/{run_id}/checkpoint.tar")
    assert missing.status_code == 404
    assert missing.json()["detail"].startswith(f"run {run_id} has no checkpoint on this server: set train.checkpoint_every")
    folder = runfiles.run_dir(run_id, settings)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"left by an earlier run numbered the same")
    queued = api.get(f"/api/v1/runs/{run_id}/checkpoint.tar")  # a run that never started wrote nothing
    assert queued.status_code == 404 and "has no checkpoint on this server" in queued.json()["detail"]
    with db.session_scope(settings.database_url) as s:
        assert crud.claim_run(run_id, "h", "t", session=s)
    written = {
        "checkpoint.pt": b"{step: 40}",
        "checkpoint.stage0.pt": os.urandom(3 * (1 << 20) + 5),  # more than one read, not a block multiple
        "checkpoint.stage1.pt": b"",
    }
    for name, data in written.items():
        (folder / name).write_bytes(data)
    (folder / "checkpoint.tmp").write_bytes(b"half written")  # never sent
    (folder / "metrics.jsonl").write_text("{}\n")
    response = api.get(f"/api/v1/runs/{run_id}/checkpoint.tar")
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-tar"
    assert response.headers["content-disposition"] == f'attachment; filename="run-{run_id}-checkpoint.tar"'
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        assert tar.getnames() == sorted(written)
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers()} == written
    assert api.get("/api/v1/runs/99999/checkpoint.tar").status_code == 404


def test_tags_and_notes_change_in_any_state_and_notes_are_searched(api, submit):
    run_id = submit(tags=["first"])["run_ids"][0]
    path = f"/api/v1/runs/{run_id}"
    assert api.get(path).json()["notes"] is None
    changed = api.patch(path, json={"tags": ["paper", "keep-0.5", "paper"], "notes": "  collapses at keep 0.5  "})
    assert changed.status_code == 200
    assert (changed.json()["tags"], changed.json()["notes"]) == (["paper", "keep-0.5"], "collapses at keep 0.5")
    assert api.patch(path, json={"notes": "why: the BN statistics"}).json()["tags"] == ["paper", "keep-0.5"]  # kept
    found = api.get("/api/v1/runs", params={"q": "BN STATISTICS"}).json()["data"]
    assert [r["id"] for r in found] == [run_id]
    cleared = api.patch(path, json={"notes": "", "tags": []}).json()
    assert (cleared["tags"], cleared["notes"]) == ([], None)
    assert api.patch(path, json={}).json()["id"] == run_id  # nothing to change: the run as it is


@pytest.mark.parametrize(
    ("body", "field"),
    [({"tags": [""]}, "tags.0"), ({"notes": "x" * 20_001}, "notes"), ({"title": "x"}, "title"), ({"tags": "a"}, "tags")],
)
def test_a_bad_edit_is_422_naming_the_field_and_changes_nothing(api, submit, body, field):
    run_id = submit(tags=["kept"])["run_ids"][0]
    answer = api.patch(f"/api/v1/runs/{run_id}", json=body)
    assert answer.status_code == 422 and answer.json()["detail"][0]["field"] == field
    assert api.get(f"/api/v1/runs/{run_id}").json()["tags"] == ["kept"]
    assert api.patch("/api/v1/runs/999999", json={"notes": "x"}).status_code == 404


def test_tags_added_and_removed_at_once_by_many_all_count(api, submit, settings):
    """Each edit reads the run's tags and writes them back; the row is locked in between, so none is lost."""
    import threading

    from backend.main import create_app
    from tests.backend.conftest import client_for

    run_id = submit(tags=["a", "gone"])["run_ids"][0]
    path = f"/api/v1/runs/{run_id}"
    assert api.patch(path, json={"add_tags": ["b", "a"], "remove_tags": ["gone"]}).json()["tags"] == ["a", "b"]
    app, go, answers = create_app(settings), threading.Barrier(8), []

    def add(k: int) -> None:
        with client_for(app) as c:
            go.wait()
            answers.append(c.patch(path, json={"add_tags": [f"t{k}"]}).status_code)

    threads = [threading.Thread(target=add, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == [200] * 8
    assert sorted(api.get(path).json()["tags"]) == sorted(["a", "b", *(f"t{k}" for k in range(8))])
