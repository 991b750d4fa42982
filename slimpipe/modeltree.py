"""A model's module tree as plain data: workers publish it, the API resolves stage paths against it without torch.

`ModuleTree` offers the three calls `slimpipe.partition.resolve` makes on a `torch.nn.Module`
(`named_children`, `modules`, `named_parameters`), so a wrong path gets the same message from the API
as from `slimpipe train`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class ModuleTree:
    def __init__(self, children: list[tuple[str, ModuleTree]], parameters: list[str] | None = None):
        self.children = children
        self.parameters = parameters or []  # the whole model's parameter names, on the root only

    def named_children(self) -> Iterator[tuple[str, ModuleTree]]:
        return iter(self.children)

    def modules(self) -> Iterator[ModuleTree]:
        yield self
        for _, child in self.children:
            yield from child.modules()

    def named_parameters(self) -> Iterator[tuple[str, None]]:
        return ((name, None) for name in self.parameters)

    @classmethod
    def from_json(cls, data: dict[str, Any], *, with_parameters: bool = True) -> ModuleTree:
        """With `with_parameters=False` the tree checks paths only, not that every parameter is in a stage."""
        children = [(name, cls.from_json(child, with_parameters=False)) for name, child in data["children"]]
        return cls(children, list(data.get("parameters", [])) if with_parameters else [])


def tree_json(module: Any, *, root: bool = True) -> dict[str, Any]:
    """`{"children": [[name, subtree], ...], "parameters": [...]}` of a torch module (parameters on the root)."""
    data: dict[str, Any] = {"children": [[name, tree_json(c, root=False)] for name, c in module.named_children()]}
    if root:
        data["parameters"] = [name for name, _ in module.named_parameters()]
    return data
