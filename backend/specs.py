"""Submitted specs → validated runs: sweep expansion plus the server's own rules (local paths in DATA_ROOT, stage
paths that exist in the model as the workers published it)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slimpipe import names
from slimpipe.datapaths import check_spec_paths
from slimpipe.modeltree import ModuleTree
from slimpipe.partition import PartitionError, resolve
from slimpipe.spec import CompressionSpec, ExperimentSpec, SpecError, dump_spec, expand_sweep

MAX_RUNS_PER_SUBMIT = 1000


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
        errors = check_spec_paths(parsed, data_root) + check_stages(parsed, trees or {})
        if errors:
            if values:
                errors = [{**e, "message": f"{e['message']} (sweep value {values})"} for e in errors]
            raise SpecError(errors)
    return [(values, dump_spec(parsed)) for values, parsed in points]


def default_queue(spec: dict[str, Any]) -> str:
    """Stage 0's queue when the spec places stages, else by device."""
    placement = spec.get("pipeline", {}).get("placement")
    if placement:
        return str(placement[0])
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


def describe_compression(direction: CompressionSpec) -> str:
    """One direction's codec in a few words: "top-k 10% · 8-bit · huffman · ef", or "dense"."""
    parts = []
    if direction.topk not in (None, 1.0):
        parts.append(f"top-k {direction.topk * 100:g}%")
    if direction.bits is not None and direction.step_std is not None:
        parts.append(f"step {direction.step_std:g}σ")
    elif direction.bits is not None and direction.rate is not None:
        parts.append(f"{direction.rate:g} {'bit' if direction.rate == 1 else 'bits'}/value")
    elif direction.bits is not None:
        parts.append(f"{direction.bits}-bit")
    elif direction.dtype != "fp32":
        parts.append(direction.dtype)
    parts += [p for p in (direction.entropy, direction.feedback) if p]
    return " · ".join(parts) or "dense"


def compression_summary(spec: dict[str, Any]) -> dict[str, str]:
    """The default boundary's forward and backward codecs, noting boundaries that override them."""
    from slimpipe.spec import parse_spec

    try:
        compression = parse_spec(spec).compression
    except SpecError:
        return {}
    overrides = f" (+{len(compression.boundaries)} boundary overrides)" if compression.boundaries else ""
    return {
        "forward": describe_compression(compression.default.forward) + overrides,
        "backward": describe_compression(compression.default.backward) + overrides,
    }
