"""Modelled time per batch: replay a schedule with measured compute times and a latency+bandwidth link.

Each stage is its own device; each boundary has one link per direction (full duplex) that carries
one transfer at a time, taking `latency + bytes * 8 / bandwidth`. A transfer starts when its producer
finishes and the link is free; the consumer starts when the data has arrived and its device is free.
With `serial=True` (the `sequential` schedule: one device) actions run back to back and nothing crosses
a link. Pure: no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from worker.pipeline.schedule import BACKWARD, FORWARD, Action


def transfer_seconds(wire_bytes: int, bandwidth_mbps: float, latency_ms: float) -> float:
    return latency_ms / 1e3 + wire_bytes * 8 / (bandwidth_mbps * 1e6)


def makespan(
    actions: Sequence[Action],
    compute_s: Mapping[tuple[int, str, int], float],
    transfer_s: Mapping[tuple[int, str, int], float],
    *,
    serial: bool = False,
) -> float:
    """Seconds from the first action's start to the last one's end.

    `compute_s[(stage, op, mb)]`; `transfer_s[(boundary, op, mb)]`: boundary b's forward transfer of
    micro-batch mb (op "F", stage b -> b+1) or backward transfer (op "B", stage b+1 -> b).
    """
    return max((end for *_, end in replay(actions, compute_s, transfer_s, serial=serial)), default=0.0)


def replay(
    actions: Sequence[Action],
    compute_s: Mapping[tuple[int, str, int], float],
    transfer_s: Mapping[tuple[int, str, int], float],
    *,
    serial: bool = False,
) -> list[tuple[int, str, int, float, float]]:
    """The modelled timeline: (stage, op, mb, start, end) of every action, in schedule order."""
    if serial:
        events, t = [], 0.0
        for a in actions:
            d = compute_s.get((a.stage, a.op, a.microbatch), 0.0)
            events.append((a.stage, a.op, a.microbatch, t, t + d))
            t += d
        return events
    last_stage = max((a.stage for a in actions), default=0)
    device_free: dict[int, float] = {}
    link_free: dict[tuple[int, str], float] = {}
    arrival: dict[tuple[int, str, int], float] = {}  # input of (stage, op, mb) ready at
    end_of: dict[tuple[int, str, int], float] = {}
    events = []
    for a in sorted(actions):
        key = (a.stage, a.op, a.microbatch)
        ready = arrival.get(key, 0.0)
        if a.op == BACKWARD:
            ready = max(ready, end_of.get((a.stage, FORWARD, a.microbatch), 0.0))
        start = max(device_free.get(a.stage, 0.0), ready)
        end = start + compute_s.get(key, 0.0)
        device_free[a.stage], end_of[key] = end, end
        events.append((a.stage, a.op, a.microbatch, start, end))
        if a.op == FORWARD:
            boundary, target = a.stage, (a.stage + 1, FORWARD, a.microbatch)
        else:
            boundary, target = a.stage - 1, (a.stage - 1, BACKWARD, a.microbatch)
        if boundary < 0 or boundary >= last_stage:
            continue
        link = (boundary, a.op)
        t0 = max(end, link_free.get(link, 0.0))
        t1 = t0 + transfer_s.get((boundary, a.op, a.microbatch), 0.0)
        link_free[link] = t1
        arrival[target] = t1
    return events
