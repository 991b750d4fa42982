"""Batch a training child's metric points, log lines and progress into SQL (~1 s or ~500 points a write)."""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from backend import crud, db
from slimpipe import names
from worker.outbox import Outbox


class LiveSummary:
    """Running summary figures while a run trains, so lists and compare tables are not empty until
    the end; the engine's own summary replaces these keys when the run finishes."""

    MEANS = {
        names.WIRE_BYTES_FWD: "wire_bytes_fwd_per_step",
        names.WIRE_BYTES_BWD: "wire_bytes_bwd_per_step",
        names.WIRE_RATIO: "compression_ratio",
        names.LINK_TIME: "link_time_per_step_s",
    }
    # Times are medians, as in the engine's summary: the first step (compiling, warming caches) left out.
    MEDIANS = {names.TIME_BATCH: "time_per_batch_s"}
    MEDIAN_WINDOW = 1000

    def __init__(self) -> None:
        self.figures: dict[str, float] = {}
        self._sums: dict[str, tuple[float, int]] = {}
        self._later: dict[str, deque[float]] = {}  # values after the first, the latest MEDIAN_WINDOW
        self._changed = False

    def add(self, name: str, value: float) -> None:
        if not math.isfinite(value):
            return
        if name == names.VAL_ACC:
            self.figures["final_val_acc"] = value
            self.figures["best_val_acc"] = max(value, self.figures.get("best_val_acc", value))
        elif name == names.TRAIN_ACC:
            self.figures["final_train_acc"] = value
        elif name in self.MEDIANS:
            key = self.MEDIANS[name]
            if key in self._later:
                self._later[key].append(value)
                self.figures[key] = statistics.median(self._later[key])
            else:
                self._later[key] = deque(maxlen=self.MEDIAN_WINDOW)
                self.figures[key] = value  # the only one so far
        elif name in self.MEANS:
            key = self.MEANS[name]
            total, count = self._sums.get(key, (0.0, 0))
            self._sums[key] = (total + value, count + 1)
            self.figures[key] = (total + value) / (count + 1)
        else:
            return
        self._changed = True

    def set_eta(self, seconds: float | None, at: float) -> None:
        """The engine's time left (`worker.train.TimeLeft`) and when it was estimated (epoch seconds on
        the worker's clock); dropped from the summary when the run ends."""
        if seconds is None or not math.isfinite(seconds):
            return
        self.figures[names.SUMMARY_ETA_S], self.figures[names.SUMMARY_ETA_AT] = seconds, at
        self._changed = True

    def take(self) -> dict[str, float] | None:
        """The figures if they changed since the last take, else None."""
        if not self._changed:
            return None
        self._changed = False
        figures = dict(self.figures)
        wire = [figures[k] for k in ("wire_bytes_fwd_per_step", "wire_bytes_bwd_per_step") if k in figures]
        if wire:
            figures["wire_bytes_per_step"] = sum(wire)
        return figures


class Reporter:
    """The engine's callbacks for one run; writes straight to SQL through `backend.crud`.

    Points are buffered and written when `flush_s` has passed or `max_points` are waiting,
    so a crash loses at most the last second. `should_stop()` is meant to be called every
    step: it flushes what is due and answers whether the run was cancelled.

    While the database is unreachable (restarted, failing over) training goes on: what is not written
    stays here and is tried again, `flush_s` after the first failure and then at doubling intervals up to
    `retry_max_s`; the run's log says how long the outage lasted and what was held. `close()` at the end
    waits for the database as long as the settings' `database_outage_s`.
    """

    def __init__(
        self,
        run_id: int,
        *,
        flush_s: float = 1.0,
        max_points: int = 500,
        progress_s: float = 0.5,
        retry_max_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.run_id = run_id
        self.flush_s = flush_s
        self.max_points = max_points
        self.progress_s = progress_s
        self.retry_max_s = retry_max_s
        self.clock = clock
        # (step, name, value, time): a tuple holds a point in half the memory of a dict, which counts while
        # the database is away and points pile up
        self.points: Outbox[tuple[int, str, float, float]] = Outbox()
        self.lines: Outbox[dict[str, Any]] = Outbox()
        self.step: int | None = None
        self.total: int | None = None
        self.cancelled = False
        self._last_flush = self._last_progress = clock()
        self._progress_dirty = False
        self._figures: dict[str, float] | None = None  # taken from `live`, not written yet
        self.live = LiveSummary()
        # An outage: when writing first failed (None while the database answers), the next try, the wait
        # after it, and the error
        self.down_since: float | None = None
        self._retry_at, self._retry_wait, self._down_error = 0.0, 0.0, ""

    @property
    def points_written(self) -> int:
        return self.points.sent

    # ------------------------------------------------------------------ engine callbacks

    def on_metrics(self, points: Iterable[Mapping[str, Any]]) -> None:
        now = time.time()
        batch = [(p["step"], p["name"], p["value"], p.get("time", now)) for p in points]
        self.points.add(batch)
        for _, name, value, _ in batch:
            self.live.add(name, value)
        if len(self.points) >= self.max_points and self.down_since is None:
            self.flush()

    def on_log(self, message: str, level: str = "INFO") -> None:
        self.lines.add([{"message": message, "level": level, "time": time.time()}])

    def on_progress(self, step: int, total: int | None = None, eta_s: float | None = None) -> None:
        self.step, self.total = step, total if total is not None else self.total
        self._progress_dirty = True
        self.live.set_eta(eta_s, time.time())

    def should_stop(self) -> bool:
        """Once per step: write what is due, then ask SQL whether the run was cancelled."""
        self.maybe_flush()
        if not self.cancelled and self.down_since is None:
            self._guarded(self._read_cancel)
        return self.cancelled

    # ------------------------------------------------------------------ writing

    def maybe_flush(self) -> None:
        now = self.clock()
        if self.down_since is not None:
            if now >= self._retry_at:
                self.flush()
        elif now - self._last_flush >= self.flush_s or len(self.points) >= self.max_points:
            self.flush()
        elif self._progress_dirty and now - self._last_progress >= self.progress_s:
            self._guarded(self._write_progress)

    def flush(self) -> None:
        """Write everything held; while the database is unreachable, keep it for the next try."""
        if self.down_since is not None:
            held = f"{len(self.points)} metric points and {len(self.lines)} log lines"
            if not self._guarded(self._write):
                return
            self.on_log(
                f"the database was unreachable for {self.clock() - self.down_since:.1f} s ({self._down_error}); "
                f"training went on, and the {held} held meanwhile are written now", "WARNING",
            )
            self.down_since = None
        self._guarded(self._write)

    def close(self, patience_s: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """The last flush: wait for the database up to `patience_s` (trying at the usual intervals), then
        raise `DatabaseUnreachable` saying what could not be written."""
        deadline = self.clock() + patience_s
        self.flush()
        while self.down_since is not None:
            left = deadline - self.clock()
            if left <= 0:
                raise DatabaseUnreachable(
                    f"the database was unreachable for {self.clock() - self.down_since:.0f} s ({self._down_error}); "
                    f"{len(self.points)} metric points and {len(self.lines)} log lines of run {self.run_id} are lost"
                )
            sleep(min(max(self._retry_at - self.clock(), 0.0), left))
            self.flush()

    def _guarded(self, write: Callable[[], None]) -> bool:
        """`write()`; False (and the outage noted) when the database is unreachable, any other error raised."""
        try:
            write()
            return True
        except Exception as exc:
            if not db.unreachable(exc):
                raise
            error = f"{type(exc).__name__}: {db.first_line(exc)[:200]}"
        now = self.clock()
        if self.down_since is None:
            self.down_since, self._retry_wait = now, self.flush_s
        else:
            self._retry_wait = min(2 * self._retry_wait, self.retry_max_s)
        self._retry_at = now + self._retry_wait
        self._down_error = error
        return False

    def _write(self) -> None:
        # Each kind leaves its outbox only once written: a failure part-way keeps the rest, and a batch whose
        # answer was lost goes again under its key, so it is not stored twice.
        self.points.send(lambda batch, key: crud.append_metrics(self.run_id, batch, key=key))
        self._figures = self.live.take() or self._figures
        if self._figures:
            crud.update_summary(self.run_id, self._figures)
            self._figures = None
        self.lines.send(lambda batch, key: crud.append_logs(self.run_id, batch, key=key))
        if self._progress_dirty:
            self._write_progress()
        self._last_flush = self.clock()

    def _write_progress(self) -> None:
        if crud.heartbeat(self.run_id, self.step, self.total):
            self.cancelled = True
        self._progress_dirty = False
        self._last_progress = self.clock()

    def _read_cancel(self) -> None:
        self.cancelled = crud.is_cancel_requested(self.run_id)


class DatabaseUnreachable(RuntimeError):
    """The database stayed unreachable past the patience given: what the run held could not be written."""
