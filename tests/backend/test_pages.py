"""The dashboard's pages render without the API token and the form covers every spec field."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.testclient import TestClient
from pydantic import BaseModel

from backend import pages
from backend.settings import Settings
from slimpipe.spec import CompressionSpec, ExperimentSpec


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.state.settings = Settings(api_token=None)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    return TestClient(app)


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and name != "compression":
            out += _leaf_paths(annotation, f"{path}.")
        elif name != "compression":
            out.append(path)
    return out


@pytest.mark.parametrize(
    "url", ["/", "/runs/new", "/runs/new?clone=3", "/runs/7", "/compare?run_ids=1,2,3", "/compare", "/experiments/2"]
)
def test_pages_render_without_token(client: TestClient, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIMPIPE_API_TOKEN", "secret")
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<link rel="stylesheet" href="/static/app.css">' in response.text
    assert "cdn" not in response.text.lower()


def test_new_run_form_has_an_input_for_every_spec_field(client: TestClient) -> None:
    html = client.get("/runs/new").text
    paths = set(re.findall(r'data-path="([^"]+)"', html))
    rel = set(re.findall(r'data-rel="([^"]+)"', html))
    for path in _leaf_paths(ExperimentSpec):
        if path == "pipeline.stages":
            assert 'data-field="pipeline.stages"' in html
            continue
        assert path in paths, path
    for name in CompressionSpec.model_fields:
        for direction in ("forward", "backward"):
            assert f"compression.default.{direction}.{name}" in paths
            assert f"{direction}.{name}" in rel


def test_form_defaults_are_a_valid_spec(client: TestClient) -> None:
    html = client.get("/runs/new").text
    initial = re.search(r'<script type="application/json" id="initial-spec">(.*?)</script>', html, re.S)
    assert initial is not None
    ExperimentSpec.model_validate_json(initial.group(1))


def test_plotly_is_served_from_the_installed_package(client: TestClient) -> None:
    response = client.get("/vendor/plotly.min.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert len(response.content) > 1_000_000
    assert b"plotly.js" in response.content[:2000]


def test_pages_load_the_basic_plotly_bundle_of_the_same_version(client: TestClient) -> None:
    basic = client.get("/vendor/plotly-basic.min.js")
    full = client.get("/vendor/plotly.min.js")
    assert basic.status_code == 200 and basic.headers["content-type"].startswith("text/javascript")
    assert len(basic.content) < len(full.content) / 3
    version = re.compile(rb"plotly\.js (?:\(basic - minified\) )?v(\d+\.\d+\.\d+)")
    assert version.search(basic.content[:300]).group(1) == version.search(full.content[:300]).group(1)
    page = client.get("/runs/1").text
    assert 'href="/vendor/plotly-basic.min.js?v=' in page and 'data-plotly-full-src="/vendor/plotly.min.js?v=' in page


def test_spec_yaml_round_trip(client: TestClient) -> None:
    spec = {
        "model": {"name": "tiny_mlp"},
        "pipeline": {"stages": [["fc1"], ["fc2"]]},
        "compression": {"default": {"forward": {"bits": 8}}},
    }
    text = client.post("/ui/spec/yaml", json={"spec": spec}).text
    assert "bits: 8" in text
    assert client.post("/ui/spec/parse", json={"text": text}).json() == {"spec": spec}


def test_bad_yaml_names_the_spec(client: TestClient) -> None:
    response = client.post("/ui/spec/parse", json={"text": "model: [unclosed"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "spec"
