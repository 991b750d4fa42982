"""Batch a training child's metric points, log lines and progress into SQL (~1 s or ~500 points a write)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from backend import crud


class Reporter:
    """The engine's callbacks for one run; writes straight to SQL through `backend.crud`.

    Points are buffered and written when `flush_s` has passed or `max_points` are waiting,
    so a crash loses at most the last second. `should_stop()` is meant to be called every
    step: it flushes what is due and answers whether the run was cancelled.
    """

    def __init__(
        self,
        run_id: int,
        *,
        flush_s: float = 1.0,
        max_points: int = 500,
        progress_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.run_id = run_id
        self.flush_s = flush_s
        self.max_points = max_points
        self.progress_s = progress_s
        self.clock = clock
        self.points: list[dict[str, Any]] = []
        self.lines: list[dict[str, Any]] = []
        self.step: int | None = None
        self.total: int | None = None
        self.points_written = 0
        self.cancelled = False
        self._last_flush = self._last_progress = clock()
        self._progress_dirty = False

    # ------------------------------------------------------------------ engine callbacks

    def on_metrics(self, points: Iterable[Mapping[str, Any]]) -> None:
        now = time.time()
        for p in points:
            self.points.append({"step": p["step"], "name": p["name"], "value": p["value"], "time": p.get("time", now)})
        if len(self.points) >= self.max_points:
            self.flush()

    def on_log(self, message: str, level: str = "INFO") -> None:
        self.lines.append({"message": message, "level": level, "time": time.time()})

    def on_progress(self, step: int, total: int | None = None) -> None:
        self.step, self.total = step, total if total is not None else self.total
        self._progress_dirty = True

    def should_stop(self) -> bool:
        """Once per step: write what is due, then ask SQL whether the run was cancelled."""
        self.maybe_flush()
        if not self.cancelled:
            self.cancelled = crud.is_cancel_requested(self.run_id)
        return self.cancelled

    # ------------------------------------------------------------------ writing

    def maybe_flush(self) -> None:
        now = self.clock()
        if now - self._last_flush >= self.flush_s or len(self.points) >= self.max_points:
            self.flush()
        elif self._progress_dirty and now - self._last_progress >= self.progress_s:
            self._write_progress()

    def flush(self) -> None:
        if self.points:
            self.points_written += crud.append_metrics(self.run_id, self.points)
            self.points = []
        if self.lines:
            crud.append_logs(self.run_id, self.lines)
            self.lines = []
        if self._progress_dirty:
            self._write_progress()
        self._last_flush = self.clock()

    def _write_progress(self) -> None:
        if crud.heartbeat(self.run_id, self.step, self.total):
            self.cancelled = True
        self._progress_dirty = False
        self._last_progress = self.clock()
