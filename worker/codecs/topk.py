"""Magnitude top-k: a sampled threshold, one candidate-gathering pass, then a cut among candidates.

A random sample brackets the k-th largest |x| in [t_lo, t_hi]. One parallel pass copies every
value with |x| >= t_lo (about k plus a small bracket) with its position; the candidates are
binned (4096 bins over the bracket), and the bin edge whose count is closest to k becomes
the threshold, so every kept |x| >= every dropped |x| and the count is within 0.5% of k.
If the bracket misses or ties pile up in one bin, an exact selection (argpartition) runs.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import torch
from numba.cpython.unsafe.numbers import trailing_zeros

NBINS = 4096
SUB = 64
SAMPLE = 1 << 16
EXACT_BELOW = 1 << 19  # below ~500K values one partition beats the sample + histogram (1 thread: 200K, 1.5 vs 4.3 ms)
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


@nb.njit(cache=True)
def _gather_chunk(x, start, stop, t_lo, cap, cand_idx, cand_val, base):  # pragma: no cover - compiled
    """Candidates of x[start:stop] into slots base.. (at most cap written); returns how many there are.
    Per 64 values a vectorized compare builds a bit mask, then only the hits (~k/n) are visited."""
    j = 0
    xs = x[start:stop]  # views indexed from 0: no negative-index wraparound, so the compare vectorizes
    whole = xs.size // SUB * SUB
    for s in range(0, whole, SUB):
        xb = xs[s : s + SUB]
        hits = np.uint64(0)
        for i in range(SUB):
            hits |= np.uint64(abs(xb[i]) >= t_lo) << np.uint64(i)
        while hits != 0:
            at = np.int64(trailing_zeros(hits))  # type: ignore[call-arg]  # numba intrinsic: the context arg is implicit
            if j < cap:
                cand_idx[base + j] = start + s + at
                cand_val[base + j] = xb[at]
            j += 1
            hits &= hits - np.uint64(1)
    for i in range(whole, xs.size):
        if abs(xs[i]) >= t_lo:
            if j < cap:
                cand_idx[base + j] = start + i
                cand_val[base + j] = xs[i]
            j += 1
    return j


@nb.njit(parallel=True, cache=True)
def _gather(x, t_lo, nchunks, cap, cand_idx, cand_val, counts):  # pragma: no cover - compiled
    """Per chunk, positions and values with |x| >= t_lo into slots [c*(cap+1), ...); counts may exceed cap."""
    n = x.size
    per = -(-n // nchunks)
    for c in nb.prange(nchunks):
        counts[c] = _gather_chunk(x, c * per, min(c * per + per, n), t_lo, cap, cand_idx, cand_val, c * (cap + 1))


@nb.njit(parallel=True, cache=True)
def _candidate_histogram(cand_val, counts, cap, t_lo, t_hi, inv_w, hist):  # pragma: no cover - compiled
    for c in nb.prange(counts.size):
        vals, h = cand_val[c * (cap + 1) : c * (cap + 1) + counts[c]], hist[c]
        for j in range(vals.size):
            h[_key(abs(vals[j]), t_lo, t_hi, inv_w)] += 1


@nb.njit(parallel=True, cache=True)
def _cut(cand_idx, cand_val, counts, cap, t_lo, t_hi, inv_w, cut, offsets, idx, vals):  # pragma: no cover - compiled
    for c in nb.prange(counts.size):
        lo, hi = c * (cap + 1), c * (cap + 1) + counts[c]
        c_idx, c_val = cand_idx[lo:hi], cand_val[lo:hi]
        o_idx, o_val = idx[offsets[c] :], vals[offsets[c] :]
        out = 0
        for j in range(c_val.size):
            v = c_val[j]
            if _key(abs(v), t_lo, t_hi, inv_w) >= cut:
                o_idx[out] = c_idx[j]
                o_val[out] = v
                out += 1


@nb.njit(cache=True)
def _nonzero_values(a, out):  # pragma: no cover - compiled
    """The nonzero values of `a`, in order, into `out` (a.size + 1 long, branch-free); returns how many."""
    o = 0
    for i in range(a.size):
        out[o] = a[i]
        o += a[i] != 0
    return o


@nb.njit(cache=True)
def _keep_first_ties(a, t, short, keep):  # pragma: no cover - compiled
    """Mark the first `short` positions where a == t (the k-th value itself at least: no scan of all of a)."""
    for i in range(a.size):
        if a[i] == t:
            keep[i] = True
            short -= 1
            if short == 0:
                return


def _exact(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted positions, values) of exactly k largest |x|; ties at the threshold keep the first ones.
    A partition finds the threshold and a mask keeps positions in order, so no sort of the k
    positions is needed (16K values, k = n/2: 113 -> 48 us)."""
    a = np.abs(x)
    nonzero = int(np.count_nonzero(a))
    if nonzero <= k:
        t = a.dtype.type(0)
    else:
        # numpy's introselect slows 20x on ReLU outputs (half the values one repeated zero): leave them out.
        values = a
        if nonzero < a.size:
            values = np.empty(a.size + 1, dtype=a.dtype)
            values = values[: _nonzero_values(a, values)]
        t = np.partition(values, values.size - k)[values.size - k]
    keep = a > t
    short = k - int(np.count_nonzero(keep))
    if short > 0:
        _keep_first_ties(a, t, short, keep)
    idx = np.flatnonzero(keep)
    if idx.size != k:
        idx = np.argpartition(a, a.size - k)[a.size - k :]  # NaN ranks largest there but compares false here
        idx.sort()
    idx = idx.astype(np.int64, copy=False)
    return idx, x[idx]


def select(x: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(sorted int64 positions, their fp32 values) of about the k largest |x| of fp32 `x`."""
    n = x.size
    if k >= n:
        return np.arange(n, dtype=np.int64), x
    if n < EXACT_BELOW:
        return _exact(x, k)
    frac = k / n
    spread = 8.0 * np.sqrt(frac * (1 - frac) * SAMPLE) + 2
    hi_rank = max(0, int(frac * SAMPLE - spread))
    low_rank = min(SAMPLE - 1, int(frac * SAMPLE + spread))
    # Ranks count from the largest; two order statistics of the sample, by partition rather than a sort.
    at = sorted({SAMPLE - 1 - hi_rank, SAMPLE - 1 - low_rank})
    ascending = np.partition(np.abs(x[rng.integers(0, n, SAMPLE)]), at)
    t_hi, t_lo = float(ascending[SAMPLE - 1 - hi_rank]), float(ascending[SAMPLE - 1 - low_rank])
    nchunks = 64
    cap = int(-(-n // nchunks) * (low_rank + 1) / SAMPLE * 1.25) + 256
    cand_idx = np.empty(nchunks * (cap + 1), dtype=np.int64)
    cand_val = np.empty(nchunks * (cap + 1), dtype=np.float32)
    counts = np.zeros(nchunks, dtype=np.int64)
    _gather(x, t_lo, nchunks, cap, cand_idx, cand_val, counts)
    if counts.max() > cap:  # the sample put t_lo far too low: more candidates than room
        return _exact(x, k)
    width = (t_hi - t_lo) / NBINS
    inv_w = 1.0 / width if width > 0 else 0.0
    hist = np.zeros((nchunks, NBINS + 1), dtype=np.int64)
    _candidate_histogram(cand_val, counts, cap, t_lo, t_hi, inv_w, hist)
    totals = hist.sum(axis=0)[::-1].cumsum()[::-1]  # totals[j]: candidates with key >= j
    cut = int(np.argmin(np.abs(totals - k)))
    if abs(int(totals[cut]) - k) > TOLERANCE * k:  # bracket missed, or ties pile up in one bin
        return _exact(x, k)
    kept = hist[:, cut:].sum(axis=1)  # per chunk
    offsets = np.concatenate([[0], np.cumsum(kept)[:-1]]).astype(np.int64)
    idx = np.empty(int(totals[cut]), dtype=np.int64)
    vals = np.empty(int(totals[cut]), dtype=np.float32)
    _cut(cand_idx, cand_val, counts, cap, t_lo, t_hi, inv_w, cut, offsets, idx, vals)
    return idx, vals


def select_torch(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by torch.topk (a radix select on CUDA), positions sorted ascending."""
    n = x.numel()
    if k >= n:
        return torch.arange(n, device=x.device), x
    idx = torch.topk(x.abs(), k, sorted=False).indices.sort().values
    return idx, x[idx]


def inclusion_probabilities(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """p_i = min(1, c |x_i|) with sum(p) = k (the largest values saturate at 1 first); float64."""
    a = magnitude.double()
    n = a.numel()
    nonzero = int(torch.count_nonzero(a))
    if k >= n or nonzero <= k:
        return (a > 0).double() if k < n else torch.ones_like(a)
    s = a.sort(descending=True).values
    tail = s.flip(0).cumsum(0).flip(0)  # tail[j] = sum of s[j:]
    m = torch.arange(k, device=a.device)
    fits = (k - m) * s[:k] <= tail[:k]  # with the m largest at 1, the next one's probability is <= 1
    first = int(torch.nonzero(fits)[0])
    c = (k - first) / float(tail[first])
    return (a * c).clamp(max=1.0)


def select_random(x: torch.Tensor, k: int, u: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomized top-k: about k sorted positions, position i kept with probability p_i ~ |x_i| (see
    `inclusion_probabilities`), its value sent as x_i / p_i, so the sparse tensor is unbiased: E = x.
    Systematic sampling with offset `u` in [0, 1) keeps exactly round(sum p) = k positions."""
    n = x.numel()
    if k >= n:
        return torch.arange(n, device=x.device), x
    p = inclusion_probabilities(x.abs(), k)
    cum = p.cumsum(0) - u
    hits = torch.floor(cum) - torch.floor(torch.cat([cum.new_full((1,), -u), cum[:-1]]))
    idx = torch.nonzero(hits > 0).flatten()
    return idx, (x[idx].double() / p[idx]).float()
