"""An emulated slow link, applied at the sender: one transfer at a time at `bandwidth`, plus `latency`.

A message handed over at `now` starts when the link is free, occupies it for `bytes * 8 / bandwidth`
(a token bucket with no burst: the rate limit of a real link), and arrives `latency (+ jitter)` later.
Arrivals never overtake each other (a link is FIFO), so one thread that sleeps until each arrival and
then hands the bytes to the real transport reproduces the link exactly. Pure: no torch, no threads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class EmulatedLink:
    bandwidth_mbps: float
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    seed: int = 0
    free_at: float = 0.0  # when the link finishes serializing the previous message
    last_arrival: float = 0.0
    busy_s: float = 0.0  # total serialization time: the link's occupancy
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.bandwidth_mbps <= 0:
            raise ValueError(f"link bandwidth must be positive, got {self.bandwidth_mbps} Mbit/s")
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ValueError("link latency and jitter must be >= 0 ms")
        self._rng = random.Random(self.seed)

    def serialization_s(self, nbytes: int) -> float:
        return nbytes * 8 / (self.bandwidth_mbps * 1e6)

    def arrival(self, nbytes: int, now: float) -> float:
        """When a message of `nbytes` handed over at `now` has fully arrived at the receiver."""
        start = max(now, self.free_at)
        serialize = self.serialization_s(nbytes)
        self.free_at = start + serialize
        self.busy_s += serialize
        delay = self.latency_ms / 1e3
        if self.jitter_ms:
            delay += self._rng.uniform(0.0, self.jitter_ms / 1e3)
        self.last_arrival = max(self.last_arrival, self.free_at + delay)
        return self.last_arrival
