"""Submitted specs → validated runs: sweep expansion plus the server's own rules (local paths in DATA_ROOT, stage
paths that exist in the model as the workers published it)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slimpipe import names
from slimpipe.modeltree import ModuleTree
from slimpipe.partition import PartitionError, resolve
from slimpipe.spec import ExperimentSpec, SpecError, dump_spec, expand_sweep

MAX_RUNS_PER_SUBMIT = 1000

# Spec options that name local files or folders.
DATA_PATH_OPTIONS = ("path", "root", "train_path", "val_path", "test_path")


def _looks_local(value: str) -> bool:
    # A hub id such as "roberta-base" or "org/model" is not a path; "/data/x", "./x", "~/x" are.
    return value.startswith(("/", ".", "~")) or "\\" in value


def confine(value: Any, field: str, data_root: Path) -> list[dict[str, str]]:
    """An error unless `value` (relative paths count from DATA_ROOT) resolves inside DATA_ROOT."""
    if not isinstance(value, str):
        return [{"field": field, "message": "must be a path string"}]
    root = data_root.expanduser().resolve()
    path = Path(value).expanduser()
    resolved = (path if path.is_absolute() else root / path).resolve()
    if resolved != root and root not in resolved.parents:
        return [{"field": field, "message": f"{value!r} is outside SLIMPIPE_DATA_ROOT ({root}); put the data there"}]
    return []


def check_paths(spec: ExperimentSpec, data_root: Path) -> list[dict[str, str]]:
    errors = []
    for key in DATA_PATH_OPTIONS:
        if key in spec.data.options:
            errors += confine(spec.data.options[key], f"data.options.{key}", data_root)
    pretrained = spec.model.options.get("pretrained")
    if isinstance(pretrained, str) and _looks_local(pretrained):
        errors += confine(pretrained, "model.options.pretrained", data_root)
    return errors


def check_stages(spec: ExperimentSpec, trees: Mapping[str, dict[str, Any]]) -> list[dict[str, str]]:
    """`pipeline.stages` resolved against the module tree workers published, with `slimpipe train`'s message.

    Models no worker published a tree for (hf_classifier: its layers come from options) are left to the worker.
    Options resize a model without renaming its modules; that every parameter sits in a stage is checked for
    the default options only.
    """
    tree = trees.get(spec.model.name)
    if spec.pipeline.stages is None or tree is None:
        return []
    try:
        resolve(ModuleTree.from_json(tree, with_parameters=not spec.model.options), spec.pipeline.stages)
    except PartitionError as exc:
        return [{"field": "pipeline.stages", "message": str(exc)}]
    return []


def expand(
    spec: dict[str, Any],
    sweep: dict[str, list[Any]] | None,
    data_root: Path,
    trees: Mapping[str, dict[str, Any]] | None = None,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(sweep values, validated spec as JSON) per grid point; `SpecError` names the field otherwise."""
    grid = math.prod(len(v) if isinstance(v, list) else 1 for v in (sweep or {}).values())
    if grid > MAX_RUNS_PER_SUBMIT:
        message = f"gives {grid} runs; at most {MAX_RUNS_PER_SUBMIT} per submission, so split the sweep"
        raise SpecError([{"field": "sweep", "message": message}])
    points = expand_sweep(spec, sweep)
    for values, parsed in points:
        errors = check_paths(parsed, data_root) + check_stages(parsed, trees or {})
        if errors:
            if values:
                errors = [{**e, "message": f"{e['message']} (sweep value {values})"} for e in errors]
            raise SpecError(errors)
    return [(values, dump_spec(parsed)) for values, parsed in points]


def default_queue(spec: dict[str, Any]) -> str:
    return names.QUEUE_GPU if spec.get("train", {}).get("device") == "cuda" else names.QUEUE_CPU


def is_uncompressed(spec: dict[str, Any]) -> bool:
    """Every boundary, both directions, sends plain fp32: the speed-up baseline."""
    from slimpipe.spec import parse_spec

    try:
        compression = parse_spec(spec).compression
    except SpecError:
        return False
    directions = [compression.default, *(compression.for_boundary(i) for i in compression.boundaries)]
    return all(d.forward.is_identity and d.backward.is_identity for d in directions)
