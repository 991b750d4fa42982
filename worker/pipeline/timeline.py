"""Modelled time per batch: the pure replay lives in `slimpipe.timeline` so the API can use it too."""

from slimpipe.timeline import Replay, makespan, replay, transfer_seconds

__all__ = ["Replay", "makespan", "replay", "transfer_seconds"]
