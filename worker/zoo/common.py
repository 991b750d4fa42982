"""What every zoo model provides: the module, its default partition and how a stage is assembled."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn


class Chain(nn.Module):
    """Children applied in order: the unsplit model is exactly the concatenation of its stages."""

    def __init__(self, children: OrderedDict[str, nn.Module]):
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)

    def forward(self, x: Any) -> Any:
        for child in self.children():
            x = child(x)
        return x


class Stage(nn.Module):
    """The modules of one stage, applied in partition order."""

    def __init__(self, items: Sequence[tuple[str, nn.Module]]):
        super().__init__()
        self.paths = [path for path, _ in items]
        self.blocks = nn.ModuleList(module for _, module in items)

    def forward(self, x: Any) -> Any:
        for block in self.blocks:
            x = block(x)
        return x

    def extra_repr(self) -> str:
        return ", ".join(self.paths)


@dataclass
class ZooModel:
    module: nn.Module
    default_stages: list[list[str]]
    blocks: list[str]  # the finest contiguous units `balance: N` may group
    make_stage: Callable[[Sequence[tuple[str, nn.Module]]], nn.Module] = Stage
    tokenizer: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # one line each for the run's log, e.g. weights not in a checkpoint


class Flatten(nn.Module):
    def forward(self, x):
        return x.flatten(1)


def even_slices(prefix: str, n_items: int, n_parts: int) -> list[str]:
    """`layers[0:3]`-style paths cutting n_items into n_parts near-equal contiguous slices."""
    if not 1 <= n_parts <= n_items:
        raise ValueError(f"cannot cut {n_items} layers into {n_parts} stages")
    bounds = [round(k * n_items / n_parts) for k in range(n_parts + 1)]
    return [f"{prefix}[{a}:{b}]" for a, b in zip(bounds, bounds[1:], strict=False)]


def parameter_sizes(model: nn.Module, paths: list[str]) -> list[float]:
    """Parameter count under each path: what `balance: N` evens out."""
    from worker.pipeline.partition import resolve_path

    return [float(sum(p.numel() for _, m in resolve_path(model, path) for p in m.parameters())) for path in paths]
