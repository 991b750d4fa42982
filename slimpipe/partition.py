"""Stage partitions: module paths with Python-like slices, resolved against a model; balance by size.

Pure: `resolve` only walks `named_children()`, `modules()` and `named_parameters()`, so the API resolves
stage paths against the module trees workers publish (`slimpipe.modeltree`) with the same messages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple


class PartitionError(ValueError):
    pass


class PathPart(NamedTuple):
    name: str
    item: int | slice | None = None  # [i] or [a:b]

    def __str__(self) -> str:
        if self.item is None:
            return self.name
        if isinstance(self.item, int):
            return f"{self.name}[{self.item}]"
        start = "" if self.item.start is None else self.item.start
        stop = "" if self.item.stop is None else self.item.stop
        return f"{self.name}[{start}:{stop}]"


_PART = re.compile(r"^([A-Za-z_]\w*)(?:\[(-?\d*)(:)?(-?\d*)\])?$")


def parse_path(path: str) -> list[PathPart]:
    """`'encoder.layer[7:]'` -> [PathPart('encoder'), PathPart('layer', slice(7, None))]."""
    parts = []
    for text in path.split("."):
        match = _PART.match(text)
        if not match or (match.group(2) == "" and match.group(3) is None and "[" in text):
            raise PartitionError(f"{path!r} is not a module path; write e.g. 'layers[0:3]' or 'encoder.layer[7:]'")
        name, start, colon, stop = match.groups()
        if colon:
            index: int | slice | None = slice(int(start) if start else None, int(stop) if stop else None)
        elif start is not None:
            index = int(start)
        else:
            index = None
        parts.append(PathPart(name, index))
    return parts


def _child(module: Any, name: str, where: str) -> Any:
    children = dict(module.named_children())
    if name not in children:
        valid = ", ".join(children) or "(none: it is a leaf module)"
        raise PartitionError(
            f"the model has no module {name!r} under {where or 'the model root'}; valid children: {valid}"
        )
    return children[name]


def _pick(container: Any, part: PathPart, where: str) -> list[tuple[str, Any]]:
    items = list(container.named_children())
    n = len(items)
    if isinstance(part.item, int):
        i = part.item + n if part.item < 0 else part.item
        if not 0 <= i < n:
            raise PartitionError(f"{where} has {n} entries (0..{n - 1}); index {part.item} is out of range")
        picked = [items[i]]
    else:
        assert isinstance(part.item, slice)
        picked = items[part.item]
        if not picked:
            raise PartitionError(f"{where}[{part.item.start}:{part.item.stop}] selects none of its {n} entries")
    return [(f"{where}[{name}]", module) for name, module in picked]


def resolve_path(model: Any, path: str) -> list[tuple[str, Any]]:
    """The modules one path names, each with a canonical path: a slice gives several."""
    parts = parse_path(path)
    current: list[tuple[str, Any]] = [("", model)]
    for part in parts:
        if len(current) != 1:
            raise PartitionError(f"{path!r}: a slice can only be the last part of a path")
        where, module = current[0]
        child_where = f"{where}.{part.name}" if where else part.name
        child = _child(module, part.name, where)
        current = [(child_where, child)] if part.item is None else _pick(child, part, child_where)
    return [(p.replace("[", ".").replace("]", ""), m) for p, m in current]


def resolve(model: Any, stages: Sequence[Sequence[str]]) -> list[list[tuple[str, Any]]]:
    """Resolve every stage; each module may sit in one stage only, and every parameter must be in one."""
    resolved = [[item for path in stage for item in resolve_path(model, path)] for stage in stages]
    seen: dict[int, tuple[int, str]] = {}
    for s, stage in enumerate(resolved):
        for path, module in stage:
            for sub in module.modules():
                if id(sub) in seen and seen[id(sub)][0] != s:
                    raise PartitionError(
                        f"module {path!r} is in stage {seen[id(sub)][0]} and stage {s}; give it one stage"
                    )
                seen.setdefault(id(sub), (s, path))
    missing = [name for name, _ in model.named_parameters() if not any(id(m) in seen for m in _owners(model, name))]
    owners = list(dict.fromkeys(name.rsplit(".", 1)[0] for name in missing))
    if owners:
        raise PartitionError(
            f"modules {', '.join(owners[:4])}{' …' if len(owners) > 4 else ''} hold parameters but are in no stage; "
            "add them to a stage (or leave pipeline.stages out for the model's default partition)"
        )
    return resolved


def _owners(model: Any, param_name: str) -> list[Any]:
    owners, module = [model], model
    for part in param_name.split(".")[:-1]:
        module = dict(module.named_children())[part]
        owners.append(module)
    return owners[1:]


# --------------------------------------------------------------------------- balance


def balance_by_size(sizes: Sequence[float], n_stages: int) -> list[int]:
    """Split `sizes` into `n_stages` contiguous runs minimising the largest run's sum; returns run lengths."""
    n = len(sizes)
    if not 1 <= n_stages <= n:
        raise PartitionError(f"cannot split {n} blocks into {n_stages} stages; choose balance between 1 and {n}")
    prefix = [0.0]
    for s in sizes:
        prefix.append(prefix[-1] + s)
    inf = float("inf")
    # best[k][i]: smallest max-stage-sum splitting the first i blocks into k stages.
    best = [[inf] * (n + 1) for _ in range(n_stages + 1)]
    cut = [[0] * (n + 1) for _ in range(n_stages + 1)]
    best[0][0] = 0.0
    for k in range(1, n_stages + 1):
        for i in range(k, n - (n_stages - k) + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], prefix[i] - prefix[j])
                if cost < best[k][i]:
                    best[k][i], cut[k][i] = cost, j
    lengths, i = [], n
    for k in range(n_stages, 0, -1):
        lengths.append(i - cut[k][i])
        i = cut[k][i]
    return lengths[::-1]


def balanced_stages(blocks: Sequence[str], sizes: Sequence[float], n_stages: int) -> list[list[str]]:
    lengths = balance_by_size(sizes, n_stages)
    stages, start = [], 0
    for length in lengths:
        stages.append(list(blocks[start : start + length]))
        start += length
    return stages
