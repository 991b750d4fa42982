"""Run folders are named by their database's identity: a run number means one run of one database."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import insert

from backend import crud, db, runfiles
from backend.models import DeletedRun, utcnow


@pytest.fixture
def other(make_settings, tmp_path):
    """Settings of a second database sharing the runs folder: another deployment, or one made again from empty."""
    url = f"sqlite:///{tmp_path / 'other.db'}"
    db.migrate(url)
    return make_settings(database_url=url)


def test_each_database_has_its_own_folder_so_a_shared_runs_dir_never_mixes_their_runs(api, submit, settings, other):
    other_url = other.database_url
    mine, theirs = runfiles.database_folder(settings), runfiles.database_folder(other)
    assert mine.parent == theirs.parent == settings.runs_dir.resolve()
    assert re.fullmatch(r"[0-9a-f]{32}", mine.name) and re.fullmatch(r"[0-9a-f]{32}", theirs.name)
    assert mine != theirs
    with db.session_scope(other_url) as s:
        assert crud.database_id(session=s) == theirs.name
    db.migrate(other_url)  # migrating again keeps the identity
    with db.session_scope(other_url) as s:
        assert crud.database_id(session=s) == theirs.name

    run_id = submit()["run_ids"][0]
    with db.session_scope(settings.database_url) as s:
        assert crud.claim_run(run_id, "h", "t", session=s)
    theirs_with_that_number = runfiles.run_dir(run_id, other)
    theirs_with_that_number.mkdir(parents=True)
    (theirs_with_that_number / "checkpoint.pt").write_bytes(b"another database's weights")
    response = api.get(f"/api/v1/runs/{run_id}/checkpoint.tar")
    assert response.status_code == 404 and "has no checkpoint on this server" in response.json()["detail"]
    runfiles.run_dir(run_id, settings).mkdir(parents=True)
    (runfiles.run_dir(run_id, settings) / "checkpoint.pt").write_bytes(b"this run's weights")
    assert b"this run's weights" in api.get(f"/api/v1/runs/{run_id}/checkpoint.tar").content


def test_prune_removes_only_this_databases_folders_of_deleted_runs(api, submit, settings, other, make_settings,
                                                                   tmp_path):
    kept, deleted, unknown = submit()["run_ids"][0], submit()["run_ids"][0], 10**6
    for run_id in (kept, deleted, unknown):
        folder = runfiles.run_dir(run_id, settings)
        folder.mkdir(parents=True)
        (folder / "checkpoint.pt").write_bytes(b"w")
    assert api.delete(f"/api/v1/runs/{deleted}").status_code == 204  # this server shares the folder: gone now
    assert not runfiles.run_dir(deleted, settings).exists()
    runfiles.run_dir(deleted, settings).mkdir()  # as a worker on another host still has it
    (runfiles.database_folder(settings) / "notes").mkdir()  # not a run folder: left alone
    runfiles.run_dir(deleted, other).mkdir(parents=True)  # that number in another database

    with db.session_scope(settings.database_url) as s:  # SQLite gives a deleted newest run's id to the next run
        s.execute(insert(DeletedRun.__table__).values(run_id=kept, deleted_at=utcnow()))

    assert runfiles.prune(settings) == [deleted]
    assert runfiles.run_dir(kept, settings).is_dir() and not runfiles.run_dir(deleted, settings).exists()
    assert (runfiles.database_folder(settings) / "notes").is_dir() and runfiles.run_dir(deleted, other).is_dir()
    # A run the database does not know (deleted from a restored backup, or never there) keeps its files.
    assert runfiles.run_dir(unknown, settings).is_dir()
    assert runfiles.prune(settings) == []
    assert runfiles.prune(make_settings(runs_dir=tmp_path / "never-made")) == []


def test_folders_from_before_the_database_id_are_named_to_the_operator_and_left_alone(settings):
    assert runfiles.legacy_notice(settings) is None
    root = settings.runs_dir.resolve()
    for n in (12, 3, 7, 100):
        (root / f"run-{n}").mkdir(parents=True)
    (root / "run-x").mkdir()
    assert [p.name for p in runfiles.legacy_folders(settings)] == ["run-3", "run-7", "run-12", "run-100"]
    here = runfiles.database_folder(settings)
    assert runfiles.legacy_notice(settings) == (
        f"4 run folders in {root} are from before run folders were named by their database (run-3, run-7, run-12 … "
        f"run-100); this database's runs use {here}/run-N. Move the ones of this database there to serve their "
        f"checkpoints and let retries continue from them: mv {root}/run-* {here}/"
    )
    assert runfiles.prune(settings) == [] and (root / "run-3").is_dir()
