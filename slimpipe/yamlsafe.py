"""YAML read with limits: size, nesting depth and nodes after alias expansion (no "billion laughs").

A 400-byte document of nested aliases expands to hundreds of megabytes once constructed; the node
graph is walked before construction, counting every node each time an alias reaches it.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_CHARS = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000


class YAMLLimitError(ValueError):
    """A document past one of the limits; the message says which."""


def _count(node: yaml.Node, depth: int, budget: list[int]) -> None:
    if depth > MAX_DEPTH:
        raise YAMLLimitError(f"nests deeper than {MAX_DEPTH} levels")
    budget[0] -= 1
    if budget[0] < 0:
        raise YAMLLimitError(f"expands to more than {MAX_NODES} values (aliases count each time they are used)")
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _count(item, depth + 1, budget)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _count(key, depth + 1, budget)
            _count(value, depth + 1, budget)


def load(text: str) -> Any:
    """`yaml.safe_load(text)` within the limits; `YAMLLimitError` or `yaml.YAMLError` otherwise."""
    if len(text) > MAX_CHARS:
        raise YAMLLimitError(f"is {len(text)} characters; at most {MAX_CHARS}")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _count(node, 0, [MAX_NODES])
        return loader.construct_document(node)
    finally:
        loader.dispose()
