"""Where runs keep their files: `<runs_dir>/<database id>/run-N` on every host that trains or serves them.

A run id only means something in one database. Named by the database's identity (migration 0003), a
folder cannot be mistaken for another database's run of the same number: two deployments sharing a
runs folder, or a database made again from empty while the old folders stay, never serve or resume
each other's checkpoints. `prune` lets a worker clear the folders of runs deleted while it was away.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from sqlalchemy.orm import Session

from backend import crud, db
from backend.settings import Settings, get_settings

log = logging.getLogger(__name__)

_RUN_FOLDER = re.compile(r"run-(\d+)")
_ids: dict[str, str] = {}  # database URL -> identity; a database's identity never changes


def database_folder(settings: Settings | None = None, *, session: Session | None = None) -> Path:
    """`<runs_dir>/<database id>`: this database's runs' folders (absolute)."""
    settings = settings or get_settings()
    url = settings.database_url
    if url not in _ids:
        if session is not None:
            _ids[url] = crud.database_id(session=session)
        else:
            with db.session_scope(url) as own:
                _ids[url] = crud.database_id(session=own)
    return settings.runs_dir.resolve() / _ids[url]


def run_dir(run_id: int, settings: Settings | None = None, *, session: Session | None = None) -> Path:
    """The folder of run `run_id` of this database: checkpoints, metrics.jsonl, log.txt, stage folders."""
    return database_folder(settings, session=session) / f"run-{int(run_id)}"


def prune(settings: Settings | None = None) -> list[int]:
    """Remove the folders of this database's runs that were deleted (while their folder was on another
    host, or while this worker was down); returns their ids. Folders of runs the database does not know,
    and other databases' folders, stay."""
    settings = settings or get_settings()
    folder = database_folder(settings)
    if not folder.is_dir():
        return []
    found = {int(m.group(1)): path for path in folder.iterdir() if (m := _RUN_FOLDER.fullmatch(path.name))}
    with db.session_scope(settings.database_url) as session:
        gone = sorted(crud.deleted_run_ids(found, session=session))
    for run_id in gone:
        shutil.rmtree(found[run_id], ignore_errors=True)
    if gone:
        log.info("removed the folders of %d deleted runs under %s: %s", len(gone), folder, gone)
    return gone


def legacy_folders(settings: Settings | None = None) -> list[Path]:
    """`<runs_dir>/run-N` folders written before run folders were named by their database (2026-12-07):
    left where they are, since nothing says which database they belong to."""
    root = (settings or get_settings()).runs_dir.resolve()
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _RUN_FOLDER.fullmatch(p.name)),
                  key=lambda p: int(p.name[4:]))


def legacy_notice(settings: Settings | None = None) -> str | None:
    """What to tell the operator about `legacy_folders`, or None when there are none."""
    found = legacy_folders(settings)
    if not found:
        return None
    here = database_folder(settings)
    shown = ", ".join(p.name for p in found[:3]) + (f" … {found[-1].name}" if len(found) > 3 else "")
    counted = "1 run folder in {} is" if len(found) == 1 else f"{len(found)} run folders in {{}} are"
    return (f"{counted.format(here.parent)} from before run folders were named by their database ({shown}); "
            f"this database's runs use {here}/run-N. Move the ones of this database there to serve their "
            f"checkpoints and let retries continue from them: mv {here.parent}/run-* {here}/")
