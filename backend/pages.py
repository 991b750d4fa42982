"""The dashboard's HTML pages: server-rendered shells that fetch their data from /api/v1 in the browser.

Pages never need the API token to load (the scripts ask for it when the API answers 401), so
nothing here reads the database; the form's fields come from the spec models themselves.
"""

from __future__ import annotations

import functools
import types
import typing
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Literal

import yaml
from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from backend.deps import require_token
from backend.jsonbody import StrictJSONRoute
from slimpipe import names, yamlsafe
from slimpipe.jsonsafe import json_problems
from slimpipe.presets import COMPRESSION_PRESET_NOTES, COMPRESSION_PRESETS
from slimpipe.spec import (
    CompressionSpec,
    DataSpec,
    DirectionalCompression,
    ExperimentSpec,
    LinkSpec,
    ModelSpec,
    OptimSpec,
    PipelineSpec,
    SpecError,
    TrainSpec,
    dump_spec,
    load_spec_text,
)
from slimpipe.timeline import PLANNER_TEXT, SPEEDUP_TEXT

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"
STATIC_DIR = FRONTEND / "static"
# plotly.js with the scatter traces only (frontend/vendor/README.md): a quarter of the full bundle to
# download and compile on a cold load. The full bundle, from the installed package, is loaded on demand.
PLOTLY_BASIC = FRONTEND / "vendor" / "plotly-basic.min.js"
templates = Jinja2Templates(directory=FRONTEND / "templates")
# The plotly URLs carry the package version, so browsers may cache them for good.
templates.env.globals["plotly_src"] = f"/vendor/plotly-basic.min.js?v={metadata.version('plotly')}"
templates.env.globals["plotly_full_src"] = f"/vendor/plotly.min.js?v={metadata.version('plotly')}"
templates.env.globals["speedup_text"] = SPEEDUP_TEXT
templates.env.globals["planner_text"] = PLANNER_TEXT
router = APIRouter(include_in_schema=False, route_class=StrictJSONRoute)

# Fields the form draws with an editor of its own instead of one input each.
CUSTOM_FIELDS = {"pipeline.stages", "pipeline.balance", "compression", "tags"}
CHOICES = {"model.name": names.MODELS, "data.name": names.DATASETS}
SECTIONS: list[tuple[str, str, type[BaseModel]]] = [
    ("model", "Model", ModelSpec),
    ("data", "Data", DataSpec),
    ("pipeline", "Pipeline", PipelineSpec),
    ("link", "Link", LinkSpec),
    ("optim", "Optimizer", OptimSpec),
    ("train", "Training", TrainSpec),
]


def _field(path: str, annotation: Any, info: Any) -> dict[str, Any]:
    """One form input: its dotted path, the input kind, choices and bounds."""
    nullable = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        nullable = True
        rest = [a for a in args if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else annotation
    origin = typing.get_origin(annotation)
    field: dict[str, Any] = {
        "path": path,
        "name": path.rsplit(".", 1)[-1],
        "nullable": nullable,
        "help": info.description or "",
        "min": None,
        "max": None,
        "choices": None,
    }
    if path in CHOICES:
        field["kind"], field["choices"] = "select", list(CHOICES[path])
    elif origin is Literal:
        field["kind"], field["choices"] = "select", list(typing.get_args(annotation))
    elif annotation is bool:
        field["kind"] = "bool"
    elif annotation is int:
        field["kind"] = "int"
    elif annotation is float:
        field["kind"] = "float"
    elif origin is dict:
        field["kind"] = "json"
    else:
        field["kind"] = "text"
    for meta in info.metadata:
        for attr, key in (("ge", "min"), ("gt", "min"), ("le", "max"), ("lt", "max")):
            if getattr(meta, attr, None) is not None:
                field[key] = getattr(meta, attr)
    return field


def model_fields(model: type[BaseModel], prefix: str) -> list[dict[str, Any]]:
    out = []
    hints = typing.get_type_hints(model)
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if path in CUSTOM_FIELDS:
            continue
        out.append(_field(path, hints[name], info))
    return out


def form_schema() -> dict[str, Any]:
    """Everything the new-run form draws, derived from the spec models so no field is left out."""
    return {
        "sections": [
            {"key": key, "title": title, "fields": model_fields(model, key)} for key, title, model in SECTIONS
        ],
        "compression_fields": model_fields(CompressionSpec, ""),
        "compression_presets": list(COMPRESSION_PRESET_NOTES.items()),
        "compression_preset_values": {
            name: DirectionalCompression.model_validate(values).model_dump() for name, values in COMPRESSION_PRESETS.items()
        },
        "name_field": _field("name", str, ExperimentSpec.model_fields["name"]),
    }


def default_spec() -> dict[str, Any]:
    spec = {"model": {"name": "tiny_mlp"}, "data": {"name": "digits"}, "compression": {"preset": "balanced"}}
    return dump_spec(ExperimentSpec.model_validate(spec))


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, {"page": template.removesuffix(".html"), **context})


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request) -> HTMLResponse:
    return _page(request, "runs.html", run_states=names.RUN_STATES)


@router.get("/runs/new", response_class=HTMLResponse)
def new_run_page(request: Request, clone: int | None = None) -> HTMLResponse:
    return _page(
        request,
        "new_run.html",
        form=form_schema(),
        clone=clone,
        initial_spec=default_spec(),
        queues=names.QUEUES,
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: int) -> HTMLResponse:
    return _page(request, "run.html", run_id=run_id)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, run_ids: str = "", baseline: int | None = None) -> HTMLResponse:
    ids = [int(part) for part in run_ids.replace(" ", "").split(",") if part.isdigit()]
    return _page(request, "compare.html", run_ids=ids, baseline=baseline)


@router.get("/experiments/{experiment_id}", response_class=HTMLResponse)
def experiment_page(request: Request, experiment_id: int) -> HTMLResponse:
    return _page(request, "experiment.html", experiment_id=experiment_id)


@router.get("/vendor/plotly.min.js")
def plotly_js() -> Response:
    """plotly.js from the installed `plotly` package: the dashboard never fetches from a CDN."""
    body = _plotly_bytes()
    return Response(
        body,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=604800, immutable"},
    )


@router.get("/vendor/plotly-basic.min.js")
def plotly_basic_js() -> Response:
    return Response(
        _plotly_basic_bytes(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=604800, immutable"},
    )


@functools.cache
def _plotly_basic_bytes() -> bytes:
    return PLOTLY_BASIC.read_bytes()


_PLOTLY: list[bytes] = []


def _plotly_bytes() -> bytes:
    if not _PLOTLY:
        _PLOTLY.append(resources.files("plotly").joinpath("package_data/plotly.min.js").read_bytes())
    return _PLOTLY[0]


# The form's YAML view: text <-> spec mapping, no database involved, but parsing input: the token applies.
@router.post("/ui/spec/parse", dependencies=[Depends(require_token)])
def parse_spec_text(text: str = Body(..., embed=True, max_length=yamlsafe.MAX_CHARS)) -> dict[str, Any]:
    try:
        spec = load_spec_text(text)
    except SpecError as exc:
        raise HTTPException(status_code=422, detail=exc.errors) from None
    problems = json_problems(spec)
    if problems:
        path, message = problems[0]
        raise HTTPException(status_code=422, detail=[{"field": ".".join(path) or "spec", "message": message}])
    return {"spec": spec}


class _SpecDumper(yaml.SafeDumper):
    """Block mappings, but lists of scalars on one line: `stages:` reads as `- [conv1, bn1]` per stage."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(item, dict | list) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_SpecDumper.add_representer(list, _represent_list)


def spec_yaml(spec: dict[str, Any]) -> str:
    return yaml.dump(spec, Dumper=_SpecDumper, sort_keys=False, default_flow_style=False, width=100)


@router.post("/ui/spec/yaml", dependencies=[Depends(require_token)])
def spec_to_yaml(spec: dict[str, Any] = Body(..., embed=True)) -> Response:
    return Response(spec_yaml(spec), media_type="text/yaml")
