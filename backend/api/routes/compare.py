"""Compare runs: what differs in their specs, accuracy, bytes on the wire, and speed-up vs the uncompressed baseline."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from backend import crud, specs
from backend.deps import MAX_ID, SessionDep
from backend.jsonbody import StrictJSONRoute
from backend.models import Run
from backend.schemas import NOT_FOUND, ComparePublic, CompareRow, media
from slimpipe import names
from slimpipe.spec import CompressionConfig
from slimpipe.timeline import speedup

router = APIRouter(tags=["compare"], route_class=StrictJSONRoute)

IGNORED_FIELDS = ("name", "tags")
PRESET_FIELD = "compression.preset"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaves, as in sweeps; lists (stage lists) are leaves."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return sum(finite) / len(finite) if finite else None


def run_figures(session: Session, run: Run) -> dict[str, Any]:
    """The summary the engine wrote; anything missing is derived from the metric series (e.g. runs logged over REST)."""
    summary = dict(run.summary or {})

    def series(name: str) -> list[float | None]:
        return crud.read_series(session=session, run_id=run.id, name=name)[1]

    if "best_val_acc" not in summary or "final_val_acc" not in summary:
        acc = [v for v in series(names.VAL_ACC) if v is not None]
        if acc:
            summary.setdefault("best_val_acc", max(acc))
            summary.setdefault("final_val_acc", acc[-1])
    if "wire_bytes_per_step" not in summary:
        fwd, bwd = _mean(series(names.WIRE_BYTES_FWD)), _mean(series(names.WIRE_BYTES_BWD))
        if fwd is not None or bwd is not None:
            summary["wire_bytes_per_step"] = (fwd or 0.0) + (bwd or 0.0)
    if "compression_ratio" not in summary:
        summary["compression_ratio"] = _mean(series(names.WIRE_RATIO))
    if "time_per_batch_s" not in summary:
        summary["time_per_batch_s"] = _mean(series(names.TIME_BATCH))
    if "link_time_per_step_s" not in summary:
        summary["link_time_per_step_s"] = _mean(series(names.LINK_TIME))
    keys = (
        "best_val_acc",
        "final_val_acc",
        "wire_bytes_per_step",
        "compression_ratio",
        "time_per_batch_s",
        "link_time_per_step_s",
        "modelled_time_per_batch_s",
        "runner",
    )
    return {k: summary.get(k) for k in keys}


def find_baseline(session: Session, compared: list[Run]) -> Run | None:
    """Among the compared runs, else in the first run's experiment: the newest finished run with no compression."""
    candidates = [r for r in compared if specs.is_uncompressed(r.spec)]
    if not candidates:
        experiment_runs, _ = crud.list_runs(session=session, experiment_id=compared[0].experiment_id, limit=10_000)
        candidates = [r for r in experiment_runs if specs.is_uncompressed(r.spec)]
    succeeded = [r for r in candidates if r.status == names.SUCCEEDED]
    pool = succeeded or candidates
    return max(pool, key=lambda r: r.id) if pool else None


def preset_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """The flattened `compression.default` a spec's preset alone gives it (no preset: the plain defaults)."""
    preset = (spec.get("compression") or {}).get("preset")
    try:
        default = CompressionConfig.model_validate({"preset": preset}).default
    except ValidationError:  # not a preset this version knows (a run logged by another trainer)
        return {}
    return flatten(json.loads(default.model_dump_json()), "compression.default")  # as dump_spec stores it


def implied_by_preset(varying: list[str], specs_by_run: dict[int, dict[str, Any]], flat: dict[int, dict[str, Any]]) -> list[str]:
    """The varying `compression.default` fields that differ only because the preset does: every run holds its
    preset's value (`balanced` vs `aggressive` differ in nine such fields; the preset names the difference)."""
    if PRESET_FIELD not in varying:
        return []
    given = {run_id: preset_defaults(spec) for run_id, spec in specs_by_run.items()}
    return [
        p
        for p in varying
        if p.startswith("compression.default.")
        and all(p in given[run_id] and repr(given[run_id][p]) == repr(f.get(p)) for run_id, f in flat.items())
    ]


def _accuracy(figures: dict[str, Any]) -> float | None:
    """What Δ accuracy compares: the final validation accuracy, else the best."""
    return figures["final_val_acc"] if figures["final_val_acc"] is not None else figures["best_val_acc"]


def build_compare(session: Session, run_ids: list[int], baseline_id: int | None) -> ComparePublic:
    compared = crud.runs_by_ids(session=session, run_ids=run_ids)
    missing = sorted(set(run_ids) - {r.id for r in compared})
    if missing:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"runs not found: {', '.join(map(str, missing))}")
    if baseline_id is not None:
        baseline = crud.get_run(session=session, run_id=baseline_id)
        if baseline is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"baseline run {baseline_id} not found")
    else:
        baseline = find_baseline(session, compared)

    flat = {r.id: flatten(r.spec) for r in compared}
    paths = sorted({p for f in flat.values() for p in f} - set(IGNORED_FIELDS))
    varying = [p for p in paths if len({repr(f.get(p)) for f in flat.values()}) > 1]
    implied = implied_by_preset(varying, {r.id: r.spec for r in compared}, flat)

    base_acc = base_figures = None
    if baseline is not None:
        base_figures = run_figures(session, baseline)
        base_acc = _accuracy(base_figures)
    rows = []
    for run in compared:
        figures = run_figures(session, run)
        acc = _accuracy(figures)
        rows.append(
            CompareRow(
                run_id=run.id,
                name=run.name,
                status=run.status,
                differences={p: flat[run.id].get(p) for p in varying},
                delta_val_acc=acc - base_acc if acc is not None and base_acc is not None else None,
                speedup=speedup(base_figures, figures),
                tags=run.tags or [],
                notes=run.notes,
                **{k: v for k, v in figures.items() if k != "runner"},
            )
        )
    return ComparePublic(
        runs=rows,
        baseline_run_id=baseline.id if baseline else None,
        varying_fields=[p for p in varying if p not in implied],
        implied_fields=implied,
    )


# At most 9 digits per id: every id the pattern admits fits the 32-bit key (an unknown one is a 404).
RunIds = Query(..., pattern=r"^\s*\d{1,9}\s*(,\s*\d{1,9}\s*)*,?$", max_length=4000, description="comma-separated run ids, e.g. 1,2,3")
Baseline = Query(None, ge=1, le=MAX_ID, description="the run to compare against; default: the newest uncompressed one")


def parse_ids(run_ids: str) -> list[int]:
    """The ids in order, once each (the query's pattern already admits only digits and commas)."""
    return list(dict.fromkeys(int(x) for x in run_ids.split(",") if x.strip()))


@router.get("/compare", response_model=ComparePublic, responses=NOT_FOUND)
def compare(session: SessionDep, run_ids: str = RunIds, baseline: int | None = Baseline) -> ComparePublic:
    return build_compare(session, parse_ids(run_ids), baseline)


@router.get("/compare.csv", response_class=Response, responses={**NOT_FOUND, **media("text/csv")})
def compare_csv(session: SessionDep, run_ids: str = RunIds, baseline: int | None = Baseline) -> Response:
    table = build_compare(session, parse_ids(run_ids), baseline)
    figures = [f for f in CompareRow.model_fields if f not in ("run_id", "name", "status", "differences")]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    fields = table.varying_fields + table.implied_fields  # every field that differs, the preset's too
    writer.writerow(["run_id", "name", "status", *figures, *fields])
    for row in table.runs:
        values = [getattr(row, f) for f in figures] + [row.differences.get(p) for p in fields]
        values = ["; ".join(v) if isinstance(v, list) else v for v in values]  # tags
        writer.writerow([row.run_id, row.name, row.status, *("" if v is None else v for v in values)])
    return Response(
        buffer.getvalue(), media_type="text/csv", headers={"Content-Disposition": 'attachment; filename="compare.csv"'}
    )
