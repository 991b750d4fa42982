"""Server-side downsampling of a metric series: LTTB, keeping the first, last, lowest and highest points."""

from __future__ import annotations

import numpy as np
from tsdownsample import LTTBDownsampler

_lttb = LTTBDownsampler()


def keep_indices(steps: list[int], values: list[float | None], max_points: int) -> list[int]:
    """Indices to keep, ascending, at most `max_points` (at least 8 are kept)."""
    n = len(steps)
    if n <= max(max_points, 8):
        return list(range(n))
    max_points = max(max_points, 8)
    y = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(y))
    if len(finite) <= max_points - 2:
        chosen = set(finite.tolist())
    else:
        x = np.asarray(steps, dtype=np.float64)[finite]
        local = _lttb.downsample(x, y[finite], n_out=max_points - 4)  # room for min, max and the ends
        chosen = set(finite[local.astype(np.int64)].tolist())
        chosen.update((int(finite[np.argmin(y[finite])]), int(finite[np.argmax(y[finite])])))
    chosen.update((0, n - 1))
    return sorted(chosen)
