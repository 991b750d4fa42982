"""Magnitude top-k: a sampled threshold refined by one histogram pass, then parallel compaction.

The sample brackets the k-th largest |x|; one pass counts values above the bracket and bins
those inside it (4096 bins); the bin edge whose count is closest to k becomes the threshold,
so every kept |x| >= every dropped |x| and the count is within 0.5% of k. If the bracket
misses or one bin holds too many ties, an exact selection (argpartition) takes over.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import torch

NBINS = 4096
SAMPLE = 1 << 16
EXACT_BELOW = 1 << 17  # small tensors: exact selection is cheap
TOLERANCE = 0.005  # accepted |count - k| / k for the histogram threshold


def keep_count(ratio: float | None, n: int) -> int:
    if ratio is None or n == 0:
        return n
    return min(n, max(1, int(round(ratio * n))))


@nb.njit(inline="always")
def _key(a, t_lo, t_hi, inv_w):  # pragma: no cover - compiled; NBINS = above the bracket, -1 = below
    if a >= t_hi:
        return NBINS
    if a < t_lo:
        return -1
    return min(np.int64((np.float64(a) - t_lo) * inv_w), NBINS - 1)


@nb.njit(parallel=True, cache=True)
def _histogram(x, nchunks, t_lo, t_hi, inv_w, hist):  # pragma: no cover - compiled
    n = x.size
    per = -(-n // nchunks)
    for c in nb.prange(nchunks):
        for i in range(c * per, min(c * per + per, n)):
            key = _key(abs(x[i]), t_lo, t_hi, inv_w)
            if key >= 0:
                hist[c, key] += 1


@nb.njit(parallel=True, cache=True)
def _compact(x, nchunks, t_lo, t_hi, inv_w, cut, offsets, idx, vals):  # pragma: no cover - compiled
    n = x.size
    per = -(-n // nchunks)
    for c in nb.prange(nchunks):
        j = offsets[c]
        for i in range(c * per, min(c * per + per, n)):
            v = x[i]
            if _key(abs(v), t_lo, t_hi, inv_w) >= cut:
                idx[j] = i
                vals[j] = v
                j += 1


def _exact(x: np.ndarray, k: int) -> np.ndarray:
    idx = np.argpartition(np.abs(x), x.size - k)[x.size - k :]
    idx.sort()
    return idx.astype(np.int64)


def select(x: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(sorted int64 positions, their fp32 values) of about the k largest |x| of fp32 `x`."""
    n = x.size
    if k >= n:
        return np.arange(n, dtype=np.int64), x
    if n < EXACT_BELOW:
        idx = _exact(x, k)
        return idx, x[idx]
    sample = np.sort(np.abs(x[rng.integers(0, n, SAMPLE)]))[::-1]
    frac = k / n
    spread = 8.0 * np.sqrt(frac * (1 - frac) * SAMPLE) + 2
    t_hi = float(sample[max(0, int(frac * SAMPLE - spread))])
    t_lo = float(sample[min(SAMPLE - 1, int(frac * SAMPLE + spread))])
    nchunks = 64
    hist = np.zeros((nchunks, NBINS + 1), dtype=np.int64)
    width = (t_hi - t_lo) / NBINS
    inv_w = 1.0 / width if width > 0 else 0.0
    _histogram(x, nchunks, t_lo, t_hi, inv_w, hist)
    above = hist[:, ::-1].cumsum(axis=1)[:, ::-1]  # above[c, j]: chunk c's values with key >= j
    totals = above.sum(axis=0)
    cut = int(np.argmin(np.abs(totals - k)))
    if abs(int(totals[cut]) - k) > TOLERANCE * k:  # bracket missed, or ties pile up in one bin
        idx = _exact(x, k)
        return idx, x[idx]
    counts = above[:, cut]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    total = int(counts.sum())
    idx = np.empty(total, dtype=np.int64)
    vals = np.empty(total, dtype=np.float32)
    _compact(x, nchunks, t_lo, t_hi, inv_w, cut, offsets, idx, vals)
    return idx, vals


def select_torch(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by torch.topk (a radix select on CUDA), positions sorted ascending."""
    n = x.numel()
    if k >= n:
        return torch.arange(n, device=x.device), x
    idx = torch.topk(x.abs(), k, sorted=False).indices.sort().values
    return idx, x[idx]
