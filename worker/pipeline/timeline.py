"""Modelled time per batch: the pure replay lives in `slimpipe.timeline` so the API can use it too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slimpipe.timeline import Key, Replay, Transfer, link_transfer, link_transfers, makespan, replay

__all__ = ["Replay", "Transfer", "link_transfer", "link_transfers", "makespan", "replay", "transfer_sizes"]


def transfer_sizes(stats: Sequence[tuple[Any, Any]]) -> dict[Key, tuple[int, int]]:
    """(wire bytes, messages) per (boundary, op, micro-batch) from a step's (forward, backward) `ChannelStats`."""
    sizes: dict[Key, tuple[int, int]] = {}
    for i, (f, b) in enumerate(stats):
        for op, channel in (("F", f), ("B", b)):
            for mb, nbytes in channel.transfers:
                total, messages = sizes.get((i, op, mb), (0, 0))
                sizes[(i, op, mb)] = (total + nbytes, messages + 1)
    return sizes
