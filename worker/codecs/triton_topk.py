"""Top-k on the device by threshold, and the index set (bitmap or Rice gaps) built and read there.

`select` makes topk.select's choice: the same random sample (drawn from the same generator, so
the generator's state stays in step with the CPU path), the same bracket and 4096 bins. One
Triton pass writes every value's bin key (int16) and counts the histogram of the bracket and above
it; the cut is chosen from it on the host (4097 counts), and the kept positions are the keys at or
above the cut (a stream compaction, no sort). Small tensors, and brackets that miss, take the exact
selection: the k-th largest |x| by torch.topk (a multi-block radix select on CUDA), ties broken by position.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from worker.codecs import indexset, topk
from worker.codecs.triton_bits import OPTIONS, pack, tile, unpack
from worker.codecs.wire import CodecError

NCHUNKS = 64  # topk.select's candidate chunks; their counts decide its fallback to the exact selection


@triton.jit
def _keys_kernel(x_ptr, n, per, bracket_ptr, keys_ptr, counts_ptr, hist_ptr, NBINS: tl.constexpr, N: tl.constexpr):
    """keys[i] = topk._key(|x[i]|) + 1: 0 below the bracket (and NaN, never a candidate, as in topk's
    gather), 1..NBINS in it, NBINS + 1 above it; hist[key] += 1 for the values in and above the bracket
    (the few in it one atomic each, those above one per program: no bin takes most of the tensor's
    atomics); and counts[c] += candidates (key >= 0) of topk.select's chunk c = i // per. Rows of
    SUB <= per values span at most two chunks, so each row adds to two counters."""
    SUB: tl.constexpr = 1024
    offs = tl.program_id(0) * N + tl.arange(0, N)
    valid = offs < n
    a = tl.abs(tl.load(x_ptr + offs, mask=valid, other=0.0)).to(tl.float64)
    t_lo = tl.load(bracket_ptr)
    t_hi = tl.load(bracket_ptr + 1)
    inv_w = tl.load(bracket_ptr + 2)
    # clamped before the conversion: a float past int32 (or NaN) would convert to poison on a GPU
    inside = tl.maximum(tl.minimum((a - t_lo) * inv_w, NBINS - 1.0), -1.0).to(tl.int32)
    key = tl.where(a >= t_hi, NBINS, tl.where(a >= t_lo, inside, -1))
    tl.store(keys_ptr + offs, (key + 1).to(tl.int16), mask=valid)
    binned = valid & (key >= 0) & (key < NBINS)
    tl.atomic_add(hist_ptr + tl.where(binned, key, 0), 1, mask=binned)
    above = tl.sum(tl.where(valid & (key == NBINS), 1, 0))
    tl.atomic_add(hist_ptr + NBINS, above, mask=above > 0)
    cand = tl.reshape(tl.where(valid & (key >= 0), 1, 0), (N // SUB, SUB))
    rows = tl.reshape(offs, (N // SUB, SUB))
    first = tl.min(rows, axis=1) // per
    in_first = tl.sum(tl.where(rows // per == first[:, None], cand, 0), axis=1)
    rest = tl.sum(cand, axis=1) - in_first
    tl.atomic_add(counts_ptr + first, in_first, mask=in_first > 0)
    tl.atomic_add(counts_ptr + first + 1, rest, mask=rest > 0)


def _exact(flat: torch.Tensor, k: int) -> torch.Tensor:
    """topk._exact on the device: sorted positions of the k largest |x|, ties at the threshold first-come."""
    a = flat.abs()
    # the k-th largest |x|: torch.topk selects with many blocks a tensor on CUDA, kthvalue with one (pytorch#75599)
    t = torch.topk(a, k, sorted=False).values.min()
    keep = a > t
    ties = a == t
    keep |= ties & (torch.cumsum(ties, 0) <= k - keep.sum())
    idx = keep.nonzero().flatten()
    if idx.numel() != k:  # NaN: numpy's partition ranks it differently; let the CPU decide
        return torch.from_numpy(topk._exact(flat.cpu().numpy(), k)[0]).to(flat.device)
    return idx


def select(flat: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
    """Sorted int64 positions (on flat's device) of the values topk.select keeps for fp32 `flat`."""
    n = flat.numel()
    if k >= n:
        return torch.arange(n, device=flat.device)
    if n < topk.EXACT_BELOW:
        return _exact(flat, k)
    draw = torch.from_numpy(rng.integers(0, n, topk.SAMPLE)).to(flat.device)
    frac = k / n
    spread = 8.0 * np.sqrt(frac * (1 - frac) * topk.SAMPLE) + 2
    hi_rank = max(0, int(frac * topk.SAMPLE - spread))
    low_rank = min(topk.SAMPLE - 1, int(frac * topk.SAMPLE + spread))
    ascending = flat[draw].abs().sort().values  # ranks count from the largest: rank r is ascending[-1 - r]
    t_hi, t_lo = ascending[[topk.SAMPLE - 1 - hi_rank, topk.SAMPLE - 1 - low_rank]].double()
    per = -(-n // NCHUNKS)
    cap = int(per * (low_rank + 1) / topk.SAMPLE * 1.25) + 256
    width = (t_hi - t_lo) / topk.NBINS  # float64 on the device, as topk.select computes it on the host
    inv_w = torch.where(width > 0, 1.0 / width, 0.0)
    bracket = torch.stack([t_lo, t_hi, inv_w])  # no host round trip: the kernel reads the bracket
    keys = torch.empty(n, dtype=torch.int16, device=flat.device)
    counts = torch.zeros(NCHUNKS + 1 + topk.NBINS + 1, dtype=torch.int32, device=flat.device)  # chunks, then bins
    size = tile(n)
    _keys_kernel[(triton.cdiv(n, size),)](flat, n, per, bracket, keys, counts, counts[NCHUNKS + 1 :], NBINS=topk.NBINS,
                                          N=size, **OPTIONS)
    host = counts.cpu().numpy()  # one copy for both
    if int(host[: NCHUNKS + 1].max()) > cap:  # the sample put t_lo far too low (topk.select: more candidates than room)
        return _exact(flat, k)
    hist_np = host[NCHUNKS + 1 :]  # bins 0..NBINS-1 of the bracket, then above it
    totals = hist_np[::-1].cumsum()[::-1]
    cut = int(np.argmin(np.abs(totals - k)))
    if abs(int(totals[cut]) - k) > topk.TOLERANCE * k:
        return _exact(flat, k)
    # key + 1 > cut <=> key >= cut; the histogram says how many there are, so no host sync to size it
    return torch.nonzero_static(keys > cut, size=int(totals[cut])).flatten()


# --------------------------------------------------------------------------- index set


def _rice_parameter(gaps: torch.Tensor, n: int) -> tuple[int, int]:
    """indexset._rice_parameter with one host sync."""
    count = gaps.numel()
    guess = int(np.clip(np.round(np.log2(max((n - count) / max(count, 1) * np.log(2), 1.0))), 0, indexset.MAX_P))
    candidates = list(range(max(0, guess - 1), min(indexset.MAX_P, guess + 1) + 1))
    unary = [u + count for u in torch.stack([(gaps >> p).sum() for p in candidates]).tolist()]
    best = min(range(len(candidates)), key=lambda i: unary[i] + count * candidates[i])
    return candidates[best], unary[best]


def encode_index(idx: torch.Tensor, n: int) -> list[bytes | torch.Tensor]:
    """indexset.encode's section as parts (its small header as bytes, then device uint8 tensors)."""
    k = idx.numel()
    complement, gaps = indexset.gaps_torch(idx, n)
    p, unary = _rice_parameter(gaps, n)
    if unary + gaps.numel() * p >= n:
        bitmap = torch.zeros(n, dtype=torch.uint8, device=idx.device)
        bitmap[idx] = 1
        return [indexset._HEAD.pack(indexset.BITMAP, 0, k, 0), pack(bitmap, 1)]
    stream = torch.zeros(unary, dtype=torch.uint8, device=idx.device)
    stream[torch.cumsum((gaps >> p) + 1, 0) - 1] = 1
    mode = indexset.RICE_COMPLEMENT if complement else indexset.RICE
    parts: list[bytes | torch.Tensor] = [indexset._HEAD.pack(mode, p, gaps.numel(), unary), pack(stream, 1)]
    if p:
        parts.append(pack(gaps & ((1 << p) - 1), p))
    return parts


def _ones(stream: torch.Tensor, nbits: int) -> torch.Tensor:
    """Positions of the set bits among the first `nbits` of an LSB-first byte stream."""
    shifts = torch.arange(8, dtype=torch.uint8, device=stream.device)
    bits = ((stream[:, None] >> shifts) & 1).reshape(-1)[:nbits]
    return bits.nonzero().flatten()


def decode_index(section: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Sorted int64 positions from the index section (a uint8 tensor on any device); raises
    CodecError like indexset.decode."""
    if section.numel() < indexset._HEAD.size:
        raise CodecError("index section is shorter than its header")
    mode, p, count, unary = indexset._HEAD.unpack_from(bytes(section[: indexset._HEAD.size].cpu().numpy()), 0)
    body = section[indexset._HEAD.size :]
    if mode == indexset.BITMAP:
        if body.numel() != (n + 7) // 8:
            raise CodecError(f"index bitmap is {body.numel()} bytes; {n} positions need {(n + 7) // 8}")
        idx = _ones(body, n)
    else:
        if mode not in (indexset.RICE, indexset.RICE_COMPLEMENT) or p > indexset.MAX_P or count > n or unary < count:
            raise CodecError(f"index section header is invalid (mode={mode}, p={p}, count={count})")
        ubytes = (unary + 7) // 8
        if body.numel() != ubytes + (count * p + 7) // 8:
            raise CodecError("index section length does not match its Rice stream sizes")
        ones = _ones(body[:ubytes], unary)
        if ones.numel() != count:
            raise CodecError(f"index Rice stream holds {ones.numel()} gaps, header says {count}")
        gaps = (torch.diff(ones, prepend=ones.new_tensor([-1])) - 1) << p
        if p:
            gaps |= unpack(body[ubytes:], p, count)
        idx = torch.cumsum(gaps + 1, 0) - 1
        if mode == indexset.RICE_COMPLEMENT:
            if count and (int(idx[-1]) >= n or count != n - k):
                raise CodecError(f"index set decodes to {count} dropped positions (expected {n - k} in [0, {n}))")
            mask = torch.ones(n, dtype=torch.bool, device=section.device)
            mask[idx] = False
            idx = mask.nonzero().flatten()
    if idx.numel() != k or (k and int(idx[-1]) >= n):
        raise CodecError(f"index set decodes to {idx.numel()} positions (expected {k} in [0, {n}))")
    return idx
