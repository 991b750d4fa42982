"""Time per batch by replay: a schedule's actions with measured compute times over a latency+bandwidth link.

Each stage is its own device; each boundary has one link per direction (full duplex) that serializes
one transfer at a time (`bytes * 8 / bandwidth`); each arrives `latency` after its last byte left, so
transfers in flight overlap as on a real network (a link is a pipe, not stop-and-wait: the emulated
link of the distributed runner, `worker/pipeline/link.py`, behaves the same). A transfer starts when its
producer finishes and the link is free; the consumer starts when the data has arrived and its device is
free.
With `serial=True` (the `sequential` schedule: one device) actions run back to back and nothing crosses
a link. Pure: no torch, so the API replays stored runs for other links (the what-if planner) with the
same code the training loop uses for the run's own link.

Speed-up is defined here, once, for the compare page, `slimpipe compare` and the client (`SPEEDUP_TEXT`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

FORWARD, BACKWARD = "F", "B"

#: What "speed-up" means wherever it is shown.
SPEEDUP_TEXT = (
    "Speed-up: the baseline's time per batch over this run's. Time per batch is the measured median for runs "
    "of the distributed runner; for inproc runs it is the pipeline replayed over the run's link from the median "
    "CPU time of each forward/backward action (stable on a busy machine); for runs logged by another trainer, "
    "their time per batch plus link time."
)
PLANNER_TEXT = (
    "Speed-up vs one device: the same actions run back to back on one device with no link, over the pipelined "
    "time per batch on the chosen link."
)


class Action(NamedTuple):
    clock: int
    stage: int
    op: str  # "F" or "B"
    microbatch: int

    def __str__(self) -> str:
        return f"{self.stage}{self.op}{self.microbatch}"


Key = tuple[int, str, int]  # (stage or boundary, op, micro-batch)


class Transfer(NamedTuple):
    """One transfer on a link: `busy_s` serializing its bytes (the link carries nothing else in that
    direction meanwhile), then `delay_s` in flight (the link already free for the next one)."""

    busy_s: float
    delay_s: float = 0.0


def link_transfer(wire_bytes: float, bandwidth_mbps: float, latency_ms: float) -> Transfer:
    """The bytes of one micro-batch's crossing (all its messages, back to back) and one latency."""
    return Transfer(wire_bytes * 8 / (bandwidth_mbps * 1e6), latency_ms / 1e3)


def link_transfers(sizes: Mapping[Key, tuple[float, int]], bandwidth_mbps: float, latency_ms: float) -> dict[Key, Transfer]:
    """`sizes[(boundary, op, mb)] = (wire bytes, messages)` (as `Replay.transfers`) over one link."""
    return {key: link_transfer(nbytes, bandwidth_mbps, latency_ms) for key, (nbytes, _) in sizes.items()}


def makespan(
    actions: Sequence[Action],
    compute_s: Mapping[Key, float],
    transfer_s: Mapping[Key, Transfer | float],
    *,
    serial: bool = False,
) -> float:
    """Seconds from the first action's start to the last one's end.

    `compute_s[(stage, op, mb)]`; `transfer_s[(boundary, op, mb)]`: boundary b's forward transfer of
    micro-batch mb (op "F", stage b -> b+1) or backward transfer (op "B", stage b+1 -> b), a `Transfer`
    or a number of seconds the link is busy with it (no latency).
    """
    return max((end for *_, end in replay(actions, compute_s, transfer_s, serial=serial)), default=0.0)


def replay(
    actions: Sequence[Action],
    compute_s: Mapping[Key, float],
    transfer_s: Mapping[Key, Transfer | float],
    *,
    serial: bool = False,
) -> list[tuple[int, str, int, float, float]]:
    """The modelled timeline: (stage, op, mb, start, end) of every action, in schedule order."""
    events: list[tuple[int, str, int, float, float]] = []
    if serial:
        t = 0.0
        for a in actions:
            d = compute_s.get((a.stage, a.op, a.microbatch), 0.0)
            events.append((a.stage, a.op, a.microbatch, t, t + d))
            t += d
        return events
    last_stage = max((a.stage for a in actions), default=0)
    device_free: dict[int, float] = {}
    link_free: dict[tuple[int, str], float] = {}
    arrival: dict[Key, float] = {}  # input of (stage, op, mb) ready at
    end_of: dict[Key, float] = {}
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
        cost = transfer_s.get((boundary, a.op, a.microbatch), 0.0)
        busy, delay = (cost, 0.0) if isinstance(cost, int | float) else cost
        t0 = max(end, link_free.get(link, 0.0))
        link_free[link] = t0 + busy
        arrival[target] = t0 + busy + delay  # one latency for every transfer: arrivals stay in order
    return events


# --------------------------------------------------------------------------- stored runs


class Replay(NamedTuple):
    """What a run stores (summary key `replay`) so any link can be replayed later without the model.

    `compute_s[(stage, op, mb)]`: median seconds of that action over the run's steps;
    `transfers[(boundary, op, mb)]`: (median wire bytes, messages) of that transfer per step.
    """

    schedule: str
    actions: list[Action]
    compute_s: dict[Key, float]
    transfers: dict[Key, tuple[float, int]]

    def to_json(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "actions": [[*a, self.compute_s.get((a.stage, a.op, a.microbatch), 0.0)] for a in self.actions],
            "transfers": [[*key, nbytes, messages] for key, (nbytes, messages) in sorted(self.transfers.items())],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Replay:
        actions = [Action(int(c), int(s), str(op), int(mb)) for c, s, op, mb, _ in data["actions"]]
        compute = {(int(s), str(op), int(mb)): float(t) for _, s, op, mb, t in data["actions"]}
        transfers = {(int(b), str(op), int(mb)): (float(n), int(k)) for b, op, mb, n, k in data["transfers"]}
        return cls(str(data["schedule"]), actions, compute, transfers)

    def link_seconds(self, bandwidth_mbps: float, latency_ms: float) -> dict[Key, Transfer]:
        """Per transfer: all its bytes over the bandwidth, then one latency (its messages go back to back)."""
        return link_transfers(self.transfers, bandwidth_mbps, latency_ms)

    def time_per_batch(self, bandwidth_mbps: float, latency_ms: float) -> float:
        if self.schedule == "sequential":
            return makespan(self.actions, self.compute_s, {}, serial=True)
        return makespan(self.actions, self.compute_s, self.link_seconds(bandwidth_mbps, latency_ms))

    def one_device(self) -> float:
        return makespan(self.actions, self.compute_s, {}, serial=True)

    def plan(self, bandwidth_mbps: float, latency_ms: float) -> dict[str, float]:
        """Time per batch and speed-up vs one device on this link (the what-if planner's answer)."""
        seconds, one = self.time_per_batch(bandwidth_mbps, latency_ms), self.one_device()
        link = 0.0 if self.schedule == "sequential" else sum(map(sum, self.link_seconds(bandwidth_mbps, latency_ms).values()))
        return {
            "bandwidth_mbps": bandwidth_mbps,
            "latency_ms": latency_ms,
            "time_per_batch_s": seconds,
            "one_device_time_per_batch_s": one,
            "speedup_vs_one_device": one / seconds if seconds > 0 else 1.0,
            "link_time_per_step_s": link,
        }


# --------------------------------------------------------------------------- speed-up


def step_seconds(summary: Mapping[str, Any] | None) -> float | None:
    """The time per batch speed-up is computed from (see `SPEEDUP_TEXT`); None when the run has none yet.

    Distributed runs: their measured median. Inproc runs: the replay (`modelled_time_per_batch_s`).
    Runs logged over REST by another trainer have neither: their own time per batch plus link time.
    """
    if not summary:
        return None
    if summary.get("runner") == "distributed" and summary.get("time_per_batch_s"):
        return float(summary["time_per_batch_s"])
    if summary.get("modelled_time_per_batch_s"):
        return float(summary["modelled_time_per_batch_s"])
    if summary.get("time_per_batch_s") is None:
        return None
    return float(summary["time_per_batch_s"]) + float(summary.get("link_time_per_step_s") or 0.0)


def speedup(baseline: Mapping[str, Any] | None, run: Mapping[str, Any] | None) -> float | None:
    """Baseline's time per batch over this run's (`SPEEDUP_TEXT`)."""
    base, this = step_seconds(baseline), step_seconds(run)
    return base / this if base and this else None
