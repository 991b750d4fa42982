"""Uniform b-bit affine quantization with tensor/channel/block scales, fused with bit-packing.

Group g holds values lo[g] + q*step[g], q in 0..2^b-1. lo is the group minimum (fp32) and
step = (max - lo)/(2^b - 1) rounded *up* to a bf16 value, so the grid still covers the group
and nearest rounding errs by at most step/2. Scales travel as lo (fp32) then step (bf16 bits).
Group of value i: (i // inner) % ngroups, with i the value's own position (block, tensor) or
its original tensor position (channel scale after top-k). Math is float64 per value, so the
half-step bound holds up to one fp32 rounding of the result.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import torch

from worker.codecs.wire import CodecError

CHUNK = 64  # values per packed chunk: 64*b bits = b whole words


def channel_layout(shape: tuple[int, ...]) -> tuple[int, int]:
    """(inner, channels): NCHW tensors scale per dim 1, others per last dim, 0-/1-D as one group."""
    if len(shape) <= 1:
        return 1, 1
    axis = 1 if len(shape) == 4 else len(shape) - 1
    return int(np.prod(shape[axis + 1 :], dtype=np.int64)), int(shape[axis])


def group_layout(scale: str, shape: tuple[int, ...], count: int, block: int, sparse: bool) -> tuple[int, int, bool]:
    """(inner, ngroups, by_position) for `count` values of a tensor of `shape`."""
    if scale == "block":
        return block, max(1, -(-count // block)), False
    if scale == "channel":
        inner, channels = channel_layout(shape)
        return inner, channels, sparse
    return max(1, count), 1, False


# --------------------------------------------------------------------------- scales


@nb.njit(parallel=True, cache=True)
def _minmax(x, inner, ngroups, pos, by_pos, lo, hi):  # pragma: no cover - compiled
    """Per-group min/max, returns 1 if any value is NaN/inf (v - v is then NaN)."""
    n = x.size
    if not by_pos and ngroups > 1 and inner * ngroups >= n:  # contiguous groups: parallel over groups
        nonfinite = np.zeros(ngroups, dtype=np.uint8)
        for g in nb.prange(ngroups):
            a, b, z = np.inf, -np.inf, 0.0
            for i in range(g * inner, min(g * inner + inner, n)):
                v = np.float64(x[i])
                a = min(a, v)
                b = max(b, v)
                z += v - v
            lo[g], hi[g] = a, b
            nonfinite[g] = z != 0.0 or z != z
        return nonfinite.max()
    nchunks = min(64, max(1, n // 65536))
    part_lo = np.full((nchunks, ngroups), np.inf)
    part_hi = np.full((nchunks, ngroups), -np.inf)
    nonfinite = np.zeros(nchunks, dtype=np.uint8)
    per = -(-n // nchunks)
    for c in nb.prange(nchunks):
        z = 0.0
        for i in range(c * per, min(c * per + per, n)):
            p = pos[i] if by_pos else i
            g = (p // inner) % ngroups
            v = np.float64(x[i])
            part_lo[c, g] = min(part_lo[c, g], v)
            part_hi[c, g] = max(part_hi[c, g], v)
            z += v - v
        nonfinite[c] = z != 0.0 or z != z
    for g in range(ngroups):
        a, b = np.inf, -np.inf
        for c in range(nchunks):
            a = min(a, part_lo[c, g])
            b = max(b, part_hi[c, g])
        lo[g], hi[g] = a, b
    return nonfinite.max()


def bf16_up(values: np.ndarray) -> np.ndarray:
    """Smallest bf16 >= each non-negative float64 value, as uint16 bit patterns."""
    f32 = values.astype(np.float32)
    f32 = np.where(f32.astype(np.float64) < values, np.nextafter(f32, np.float32(np.inf)), f32)
    u = f32.view(np.uint32).astype(np.uint64)
    u = np.where(u & 0xFFFF, u + 0x10000, u) >> 16
    return u.astype(np.uint16)


def bf16_to_float(bits16: np.ndarray) -> np.ndarray:
    return (bits16.astype(np.uint32) << 16).view(np.float32)


def scales(lo: np.ndarray, hi: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(lo fp32, step as bf16 bits); empty groups get lo=0, step=0."""
    empty = ~(lo <= hi)
    lo32 = np.where(empty, 0.0, lo).astype(np.float32)
    lo32 = np.where(lo32.astype(np.float64) > lo, np.nextafter(lo32, np.float32(-np.inf)), lo32)
    span = np.where(empty, 0.0, hi - lo32.astype(np.float64)) / ((1 << bits) - 1)
    step = bf16_up(span)
    if np.any(bf16_to_float(step) == np.inf):
        raise CodecError("value range overflows float32 steps; cannot quantize values spanning more than ~3e38")
    return lo32, step


def scales_bytes(lo32: np.ndarray, step: np.ndarray) -> bytes:
    return lo32.tobytes() + step.tobytes()


def parse_scales(section: memoryview, ngroups: int) -> tuple[np.ndarray, np.ndarray]:
    if section.nbytes != 6 * ngroups:
        raise CodecError(f"scales section is {section.nbytes} bytes; {ngroups} groups need {6 * ngroups}")
    raw = np.frombuffer(section, dtype=np.uint8)
    lo = raw[: 4 * ngroups].view(np.float32).astype(np.float64)
    step = bf16_to_float(raw[4 * ngroups :].view(np.uint16)).astype(np.float64)
    return lo, step


def inverse(step: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(step > 0, 1.0 / np.where(step > 0, step, 1.0), 0.0)


# --------------------------------------------------------------------------- fused kernels


@nb.njit(inline="always")
def _uniform(seed, i):  # pragma: no cover - compiled; splitmix64 of the position
    z = np.uint64(seed) + np.uint64(i) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@nb.njit(inline="always")
def _symbol(v, lo, inv, maxq, stochastic, seed, i):  # pragma: no cover - compiled
    t = (v - lo) * inv + (_uniform(seed, i) if stochastic else 0.5)
    q = np.int64(t) if t > 0 else np.int64(0)
    return min(q, maxq)


@nb.njit(parallel=True, cache=True)
def _quant_pack(x, lo, inv, bits, inner, ngroups, pos, by_pos, stochastic, seed, words):  # pragma: no cover
    n = x.size
    maxq = (np.int64(1) << bits) - 1
    for c in nb.prange((n + CHUNK - 1) // CHUNK):
        i0 = c * CHUNK
        g = (i0 // inner) % ngroups
        rem = i0 % inner
        w = c * bits
        acc = np.uint64(0)
        nacc = 0
        for i in range(i0, min(i0 + CHUNK, n)):
            if by_pos:
                g = (pos[i] // inner) % ngroups
            v = np.uint64(_symbol(np.float64(x[i]), lo[g], inv[g], maxq, stochastic, seed, i))
            acc |= v << np.uint64(nacc)
            nacc += bits
            if nacc >= 64:
                words[w] = acc
                w += 1
                nacc -= 64
                acc = (v >> np.uint64(bits - nacc)) if nacc > 0 else np.uint64(0)
            rem += 1
            if rem == inner:
                rem = 0
                g = g + 1 if g + 1 < ngroups else 0
        if nacc > 0:
            words[w] = acc


@nb.njit(parallel=True, cache=True)
def _unpack_dequant(words, bits, lo, step, inner, ngroups, pos, by_pos, scatter, out):  # pragma: no cover
    n = pos.size if scatter else out.size
    mask = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    for c in nb.prange((n + CHUNK - 1) // CHUNK):
        i0 = c * CHUNK
        g = (i0 // inner) % ngroups
        rem = i0 % inner
        w = c * bits
        acc = words[w]
        avail = 64
        for i in range(i0, min(i0 + CHUNK, n)):
            if avail >= bits:
                q = acc & mask
                acc >>= np.uint64(bits)
                avail -= bits
            else:
                w += 1
                nxt = words[w]
                q = (acc | (nxt << np.uint64(avail))) & mask
                acc = nxt >> np.uint64(bits - avail)
                avail = 64 - (bits - avail)
            if by_pos:
                g = (pos[i] // inner) % ngroups
            value = lo[g] + np.float64(q) * step[g]
            if scatter:
                out[pos[i]] = value
            else:
                out[i] = value
            rem += 1
            if rem == inner:
                rem = 0
                g = g + 1 if g + 1 < ngroups else 0


@nb.njit(parallel=True, cache=True)
def _quant_symbols(x, lo, inv, bits, inner, ngroups, pos, by_pos, stochastic, seed, out):  # pragma: no cover
    n = x.size
    maxq = (np.int64(1) << bits) - 1
    for c in nb.prange((n + CHUNK - 1) // CHUNK):
        i0 = c * CHUNK
        g = (i0 // inner) % ngroups
        rem = i0 % inner
        for i in range(i0, min(i0 + CHUNK, n)):
            if by_pos:
                g = (pos[i] // inner) % ngroups
            out[i] = _symbol(np.float64(x[i]), lo[g], inv[g], maxq, stochastic, seed, i)
            rem += 1
            if rem == inner:
                rem = 0
                g = g + 1 if g + 1 < ngroups else 0


@nb.njit(parallel=True, cache=True)
def _dequant_symbols(sym, lo, step, inner, ngroups, pos, by_pos, scatter, out):  # pragma: no cover
    n = sym.size
    for c in nb.prange((n + CHUNK - 1) // CHUNK):
        i0 = c * CHUNK
        g = (i0 // inner) % ngroups
        rem = i0 % inner
        for i in range(i0, min(i0 + CHUNK, n)):
            if by_pos:
                g = (pos[i] // inner) % ngroups
            value = lo[g] + np.float64(sym[i]) * step[g]
            if scatter:
                out[pos[i]] = value
            else:
                out[i] = value
            rem += 1
            if rem == inner:
                rem = 0
                g = g + 1 if g + 1 < ngroups else 0


# --------------------------------------------------------------------------- numpy entry points

_NO_POS = np.zeros(0, dtype=np.int64)


def group_scales(x: np.ndarray, bits: int, inner: int, ngroups: int, pos: np.ndarray | None):
    """(lo fp32, step bf16 bits) for fp32 values `x`; raises CodecError on NaN/inf."""
    lo = np.empty(ngroups, dtype=np.float64)
    hi = np.empty(ngroups, dtype=np.float64)
    if x.size == 0:
        lo[:], hi[:] = np.inf, -np.inf
    elif _minmax(x, inner, ngroups, _NO_POS if pos is None else pos, pos is not None, lo, hi):
        raise CodecError("tensor has NaN or inf values; quantization needs finite values (use bits: null)")
    return scales(lo, hi, bits)


def quantize_packed(x, bits, lo32, step, inner, ngroups, pos, stochastic, seed) -> np.ndarray:
    """Quantize fp32 `x` and bit-pack in one pass: uint8 array of ceil(n*bits/8) bytes."""
    words = np.zeros((x.size * bits + 63) // 64 + 1, dtype=np.uint64)
    if x.size:
        _quant_pack(x, lo32.astype(np.float64), inverse(bf16_to_float(step).astype(np.float64)), bits, inner, ngroups,
                    _NO_POS if pos is None else pos, pos is not None, stochastic, seed, words)
    return words.view(np.uint8)[: (x.size * bits + 7) // 8]


def quantize_symbols(x, bits, lo32, step, inner, ngroups, pos, stochastic, seed) -> np.ndarray:
    out = np.empty(x.size, dtype=np.uint16)
    if x.size:
        _quant_symbols(x, lo32.astype(np.float64), inverse(bf16_to_float(step).astype(np.float64)), bits, inner,
                       ngroups, _NO_POS if pos is None else pos, pos is not None, stochastic, seed, out)
    return out


def dequantize_packed(words, bits, lo, step, inner, ngroups, pos, by_pos, out) -> None:
    """Unpack + dequantize into `out` (fp32); with `pos`, scatter value i to out[pos[i]]."""
    scatter = pos is not None
    _unpack_dequant(words, bits, lo, step, inner, ngroups, _NO_POS if pos is None else pos, by_pos, scatter, out)


def dequantize_symbols(sym, lo, step, inner, ngroups, pos, by_pos, out) -> None:
    _dequant_symbols(sym, lo, step, inner, ngroups, _NO_POS if pos is None else pos, by_pos, pos is not None, out)


# --------------------------------------------------------------------------- torch (any device)


def _groups_torch(count: int, inner: int, ngroups: int, pos: torch.Tensor | None, device) -> torch.Tensor:
    where = pos if pos is not None else torch.arange(count, device=device)
    return torch.div(where, inner, rounding_mode="floor") % ngroups


def group_scales_torch(x: torch.Tensor, bits: int, inner: int, ngroups: int, pos: torch.Tensor | None):
    """Same scales as `group_scales`, reduced with torch ops on x's device; returned as numpy."""
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise CodecError("tensor has NaN or inf values; quantization needs finite values (use bits: null)")
    groups = _groups_torch(x.numel(), inner, ngroups, pos, x.device)
    lo = torch.full((ngroups,), float("inf"), device=x.device, dtype=torch.float64)
    hi = torch.full((ngroups,), float("-inf"), device=x.device, dtype=torch.float64)
    lo = lo.scatter_reduce(0, groups, x.double(), "amin")
    hi = hi.scatter_reduce(0, groups, x.double(), "amax")
    return scales(lo.cpu().numpy(), hi.cpu().numpy(), bits)


def quantize_torch(x, bits, lo32, step, inner, ngroups, pos, stochastic, generator=None) -> torch.Tensor:
    """int32 symbols on x's device."""
    groups = _groups_torch(x.numel(), inner, ngroups, pos, x.device)
    lo = torch.from_numpy(lo32.astype(np.float64)).to(x.device)[groups]
    inv = torch.from_numpy(inverse(bf16_to_float(step).astype(np.float64))).to(x.device)[groups]
    t = (x.double() - lo) * inv
    t = t + (torch.rand(t.shape, generator=generator, device=x.device, dtype=torch.float64) if stochastic else 0.5)
    return t.floor().clamp_(0, (1 << bits) - 1).to(torch.int32)


def dequantize_torch(sym, lo, step, inner, ngroups, pos, by_pos) -> torch.Tensor:
    groups = _groups_torch(sym.numel(), inner, ngroups, pos if by_pos else None, sym.device)
    lo_t = torch.from_numpy(lo).to(sym.device)[groups]
    step_t = torch.from_numpy(step).to(sym.device)[groups]
    return (lo_t + sym.double() * step_t).float()
