"""The API under test, once on SQLite and once on a throwaway PostgreSQL, with the embedded broker in a temp folder."""

from __future__ import annotations

import json
from base64 import b64decode
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend import db
from backend.main import create_app
from backend.settings import Settings
from slimpipe import names

SPEC: dict[str, Any] = {
    "name": "digits-mlp",
    "model": {"name": "tiny_mlp"},
    "data": {"name": "digits", "batch_size": 32},
    "pipeline": {"microbatches": 4},
    "train": {"max_steps": 20, "eval_every": 10},
}


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request, tmp_path_factory) -> str:
    """A migrated database: a SQLite file, or a fresh database on the throwaway PostgreSQL server."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'slimpipe.db'}"
    else:
        url = request.getfixturevalue("postgres_server").new_database()
    db.migrate(url)
    return url


@pytest.fixture
def make_settings(database_url: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "broker_url": "filesystem://",
            "broker_dir": tmp_path / "broker",
            "data_root": tmp_path / "data",
            "runs_dir": tmp_path / "runs",
            "api_token": None,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings()


def client_for(app: Any, **kwargs: Any) -> TestClient:
    """A TestClient as the dashboard and the CLI talk: to a loopback Host, naming itself (the cross-site guard)."""
    headers = {names.CSRF_HEADER: "1", **kwargs.pop("headers", {})}
    return TestClient(app, base_url="http://localhost", headers=headers, **kwargs)


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with client_for(create_app(settings)) as client:
        yield client


@pytest.fixture
def submit(api: TestClient) -> Callable[..., dict[str, Any]]:
    """POST /experiments and check it was accepted; returns `{"experiment_id", "run_ids"}`."""

    def go(spec: dict[str, Any] | None = None, **body: Any) -> dict[str, Any]:
        response = api.post("/api/v1/experiments", json={"spec": spec or SPEC, **body})
        assert response.status_code == 201, response.text
        return response.json()

    return go


def queued_messages(broker_dir: Path) -> list[dict[str, Any]]:
    """Tasks waiting in the embedded transport: `{"task", "args", "queue"}` each."""
    out = []
    for path in sorted((broker_dir / "queue").glob("*.msg")):
        message = json.loads(path.read_text())
        args, _kwargs, _embed = json.loads(b64decode(message["body"]))
        out.append({"task": message["headers"]["task"], "args": args, "queue": path.name.split(".")[-2]})
    return out
