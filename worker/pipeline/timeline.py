"""Modelled time per batch: the pure replay lives in `slimpipe.timeline` so the API can use it too."""

from slimpipe.timeline import Replay, Transfer, link_transfer, makespan, replay, transfer_seconds

__all__ = ["Replay", "Transfer", "link_transfer", "makespan", "replay", "transfer_seconds"]
