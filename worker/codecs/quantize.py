"""Uniform b-bit affine quantization with tensor/channel/block scales, fused with bit-packing.

Group g holds values lo[g] + q*step[g], q in 0..2^b-1. lo is the group minimum (fp32) and
step = (max - lo)/(2^b - 1) rounded *up* to a bf16 value, so the grid still covers the group
and nearest rounding errs by at most step/2. Scales travel as lo (fp32) then step (bf16 bits).
Group of value i: (i // inner) % ngroups, with i the value's own position (block, tensor) or
its original tensor position (channel scale after top-k). Math is float64 per value, so the
half-step bound holds up to one fp32 rounding of the result.
"""

from __future__ import annotations

import numpy as np
import torch

from worker.codecs import entropy, fused
from worker.codecs.wire import CodecError


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


def bf16_up(values: np.ndarray) -> np.ndarray:
    """Smallest bf16 >= each non-negative float64 value, as uint16 bit patterns (inf past bf16's range)."""
    with np.errstate(over="ignore"):
        f32 = values.astype(np.float32)
    f32 = np.where(f32.astype(np.float64) < values, np.nextafter(f32, np.float32(np.inf)), f32)
    u: np.ndarray = f32.view(np.uint32).astype(np.uint64)
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


# --------------------------------------------------------------------------- numba entry points

_NO_POS = np.zeros(0, dtype=np.int64)
_NOT_FINITE = "tensor has NaN or inf values; quantization needs finite values (use bits: null)"


def _minmax(x: np.ndarray, inner: int, ngroups: int, pos: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    n = x.size
    if pos is not None:
        lo, hi = np.full(ngroups, np.inf), np.full(ngroups, -np.inf)
        if fused.minmax_by_position(x, pos, inner, ngroups, lo, hi) != 0:
            raise CodecError(_NOT_FINITE)
        return lo, hi
    if inner == 1 and ngroups > 1:  # channels along the last dim
        rows = x.reshape(-1, ngroups)
        lo, hi = rows.min(axis=0).astype(np.float64), rows.max(axis=0).astype(np.float64)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise CodecError(_NOT_FINITE)
        return lo, hi
    run = 1 << 16 if ngroups == 1 else inner
    runs = -(-n // run)
    lo, hi, sums = np.empty(runs, np.float32), np.empty(runs, np.float32), np.empty(runs, np.float64)
    fused.run_minmax(x, run, lo, hi, sums)
    if not np.isfinite(sums).all():
        raise CodecError(_NOT_FINITE)
    if runs != ngroups:  # tensor scale, or channel runs of `inner` values repeating every ngroups runs
        lo, hi = lo.reshape(-1, ngroups).min(axis=0), hi.reshape(-1, ngroups).max(axis=0)
    return lo.astype(np.float64), hi.astype(np.float64)


RATE_SAMPLE = 16384  # values the rate search looks at (drawn with a fixed seed: the same bytes every time)


def rate_multiple(
    z: np.ndarray, peak: float, rate: float, bits: int, stochastic: bool = False, iterations: int = 12
) -> float:
    """The step, in standard deviations, at which `z` (a sample of the values, in their groups' standard
    deviations) rounds to levels of about `rate` bits of entropy per value: bisection on log2 of the step,
    whose entropy falls as it grows. With `stochastic`, the levels' expected histogram (each value split
    between its two neighbours by its rounding probabilities). The step never gets so fine that 2^bits
    levels around the mean miss a value (`peak`: the largest |value - mean| / std of all of them): where
    that bounds it (heavy tails at few bits; a gradient with one live token in 64) the levels carry fewer
    bits, and nothing clamps."""
    if peak == 0.0 or not z.size:
        return 1.0
    lo, hi = float(np.log2(peak / max(1, (1 << (bits - 1)) - 1))), 10.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        scaled = z * 2.0**-mid
        if stochastic:
            below = np.floor(scaled)
            up = scaled - below
            index = (below - below.min()).astype(np.int64)
            counts = np.bincount(index, weights=1.0 - up, minlength=int(index.max()) + 2)
            counts += np.bincount(index + 1, weights=up, minlength=int(index.max()) + 2)
        else:
            levels = np.rint(scaled).astype(np.int64)
            counts = np.bincount(levels - levels.min())
        if entropy.counts_entropy_bits(counts) / z.size > rate:
            lo = mid
        else:
            hi = mid
    return float(2.0**hi)


def std_scales(
    x: np.ndarray, bits: int, inner: int, ngroups: int, pos: np.ndarray | None, step_std: float | None,
    rate: float | None = None, stochastic: bool = False,
):
    """(lo fp32, step bf16 bits) for a fixed step of `step_std` standard deviations per group, the group's
    mean on level 2^(bits-1); values past the levels clamp. With `rate` instead, the multiple is the one
    whose levels carry about `rate` bits per value (`rate_multiple` on a fixed sample of the values). NumPy
    float64 on the host for every backend, so all of them send the same bytes. A constant group gets step 0
    and its value as lo."""
    n = x.size
    if ngroups == 1:  # one tensor-wide group: one compiled pass for the mean, one for the spread
        total, mean0, var0, peak0 = fused.moments(np.ascontiguousarray(x, dtype=np.float32))
        if not np.isfinite(total):
            raise CodecError(_NOT_FINITE)
        filled, mean, var = np.array([n > 0]), np.array([mean0]), np.array([var0])
    else:
        if n and not np.isfinite(x).all():
            raise CodecError(_NOT_FINITE)
        values = x.astype(np.float64)
        where = np.arange(n, dtype=np.int64) if pos is None else pos.astype(np.int64)
        group = (where // inner) % ngroups
        count = np.bincount(group, minlength=ngroups).astype(np.float64)
        filled = count > 0
        mean = np.bincount(group, weights=values, minlength=ngroups) / np.where(filled, count, 1.0)
        var = np.bincount(group, weights=(values - mean[group]) ** 2, minlength=ngroups) / np.where(filled, count, 1.0)
    sd = np.sqrt(var)
    if rate is not None:
        pick = np.random.default_rng(RATE_SAMPLE).integers(0, n, RATE_SAMPLE) if n > RATE_SAMPLE else np.arange(n)
        g = np.zeros(pick.size, dtype=np.int64) if ngroups == 1 else group[pick]
        inverse_sd = 1.0 / np.where(sd > 0, sd, np.inf)
        z = (x[pick].astype(np.float64) - mean[g]) * inverse_sd[g]
        if ngroups == 1:
            peak = float(peak0 * inverse_sd[0]) if n else 0.0
        else:
            peak = float((np.abs(values - mean[group]) * inverse_sd[group]).max()) if n else 0.0
        step_std = rate_multiple(z, peak, rate, bits, stochastic)
    assert step_std is not None
    step = bf16_up(step_std * sd)
    if np.any(bf16_to_float(step) == np.inf):
        raise CodecError("value range overflows float32 steps; cannot quantize values spanning more than ~3e38")
    lo = mean - (1 << (bits - 1)) * bf16_to_float(step).astype(np.float64)
    top = lo + ((1 << bits) - 1) * bf16_to_float(step).astype(np.float64)
    if np.any(np.maximum(np.abs(lo), np.abs(top))[filled] > np.finfo(np.float32).max):
        raise CodecError(
            f"{1 << bits} levels of {step_std:g} standard deviations reach past float32's range; use fewer bits "
            "or a smaller step_std (or a higher rate)"
        )
    return np.where(filled, lo, 0.0).astype(np.float32), step


def group_scales(x, bits: int, inner: int, ngroups: int, pos: np.ndarray | None):
    """(lo fp32, step bf16 bits) for fp32 values `x`; raises CodecError on NaN/inf."""
    if x.size == 0:
        return scales(np.full(ngroups, np.inf), np.full(ngroups, -np.inf), bits)
    return scales(*_minmax(x, inner, ngroups, pos), bits)


def _quantize(x, bits, lo32, step, inner, ngroups, pos, stochastic, seed, packed):
    words = np.zeros((x.size * bits + 63) // 64 + 1 if packed else 1, dtype=np.uint64)
    symbols = np.empty(0 if packed else x.size, dtype=np.uint16)
    if x.size:
        fused.quant_pack(
            x,
            lo32.astype(np.float64),
            inverse(bf16_to_float(step).astype(np.float64)),
            bits,
            inner,
            ngroups,
            _NO_POS if pos is None else pos,
            pos is not None,
            stochastic,
            seed,
            packed,
            words,
            symbols,
        )
    return words.view(np.uint8)[: (x.size * bits + 7) // 8] if packed else symbols


def block_quantize(x, bits: int, block: int, stochastic: bool, seed: int, packed: bool):
    """Block scales in the same pass as quantization (block % 64 == 0): (lo32, step bits, bytes or symbols)."""
    nblocks = max(1, -(-x.size // block))
    lo = np.zeros(nblocks, dtype=np.float32)
    step = np.zeros(nblocks, dtype=np.float32)
    bad = np.zeros(-(-nblocks // max(1, (1 << 16) // block)), dtype=np.uint8)
    words = np.zeros((x.size * bits + 63) // 64 + 1 if packed else 1, dtype=np.uint64)
    symbols = np.empty(0 if packed else x.size, dtype=np.uint16)
    if x.size:
        fused.block_quant_pack(x, block, bits, stochastic, seed, packed, lo, step, bad, words, symbols)
    if bad.any():
        raise CodecError(_NOT_FINITE)
    if np.isinf(step).any():
        raise CodecError("value range overflows float32 steps; cannot quantize values spanning more than ~3e38")
    out = words.view(np.uint8)[: (x.size * bits + 7) // 8] if packed else symbols
    return lo, (step.view(np.uint32) >> 16).astype(np.uint16), out


def quantize_packed(x, bits, lo32, step, inner, ngroups, pos, stochastic, seed) -> np.ndarray:
    """Quantize fp32 `x` and bit-pack in one pass: uint8 array of ceil(n*bits/8) bytes."""
    return _quantize(x, bits, lo32, step, inner, ngroups, pos, stochastic, seed, True)


def quantize_symbols(x, bits, lo32, step, inner, ngroups, pos, stochastic, seed) -> np.ndarray:
    """Quantize fp32 `x` to uint16 symbols (for the entropy stage)."""
    return _quantize(x, bits, lo32, step, inner, ngroups, pos, stochastic, seed, False)


def dequantize_packed(words, bits, lo, step, inner, ngroups, pos, by_pos, out) -> None:
    """Unpack + dequantize into `out` (fp32); with `pos`, scatter value i to out[pos[i]]."""
    count = out.size if pos is None else pos.size
    fused.unpack_dequant(
        words,
        np.zeros(0, np.uint16),
        True,
        bits,
        lo,
        step,
        inner,
        ngroups,
        _NO_POS if pos is None else pos,
        by_pos,
        pos is not None,
        count,
        out,
    )


def dequantize_symbols(sym, lo, step, inner, ngroups, pos, by_pos, out) -> None:
    fused.unpack_dequant(
        np.zeros(1, np.uint64),
        sym,
        False,
        1,
        lo,
        step,
        inner,
        ngroups,
        _NO_POS if pos is None else pos,
        by_pos,
        pos is not None,
        sym.size,
        out,
    )


# --------------------------------------------------------------------------- torch (any device)


def _groups_torch(count: int, inner: int, ngroups: int, pos: torch.Tensor | None, device) -> torch.Tensor:
    where = pos if pos is not None else torch.arange(count, device=device)
    return torch.div(where, inner, rounding_mode="floor") % ngroups


def group_scales_torch(x: torch.Tensor, bits: int, inner: int, ngroups: int, pos: torch.Tensor | None):
    """Same scales as `group_scales`, reduced with torch ops on x's device; returned as numpy."""
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise CodecError("tensor has NaN or inf values; quantization needs finite values (use bits: null)")
    n = x.numel()
    if n == 0:
        lo = hi = None
    elif pos is None and inner * ngroups >= n:  # contiguous groups (blocks, one tensor, one sample of channels)
        padded = torch.nn.functional.pad(x, (0, inner * ngroups - n), value=float("nan")).view(ngroups, inner)
        lo = torch.where(padded.isnan(), float("inf"), padded).amin(dim=1)
        hi = torch.where(padded.isnan(), float("-inf"), padded).amax(dim=1)
    elif pos is None:  # channels repeating over leading dims
        lo, hi = x.view(-1, ngroups, inner).amin(dim=(0, 2)), x.view(-1, ngroups, inner).amax(dim=(0, 2))
    else:
        groups = _groups_torch(n, inner, ngroups, pos, x.device)
        lo = torch.full((ngroups,), float("inf"), device=x.device).scatter_reduce(0, groups, x, "amin")
        hi = torch.full((ngroups,), float("-inf"), device=x.device).scatter_reduce(0, groups, x, "amax")
    if lo is None or hi is None:
        return scales(np.full(ngroups, np.inf), np.full(ngroups, -np.inf), bits)
    return scales(lo.double().cpu().numpy(), hi.double().cpu().numpy(), bits)


def _per_value(table: np.ndarray, count: int, inner: int, ngroups: int, pos, device) -> torch.Tensor:
    """table[group of value i] for every value, as float64 on `device` (no index tensors when groups tile)."""
    values = torch.from_numpy(np.ascontiguousarray(table, dtype=np.float64)).to(device)
    if pos is not None:
        return values[_groups_torch(count, inner, ngroups, pos, device)]
    tiled = values.repeat_interleave(inner)
    return tiled[:count] if inner * ngroups >= count else tiled.repeat(count // (inner * ngroups))


def quantize_torch(x, bits, lo32, step, inner, ngroups, pos, stochastic, generator=None) -> torch.Tensor:
    """int32 symbols on x's device."""
    lo = _per_value(lo32, x.numel(), inner, ngroups, pos, x.device)
    inv = _per_value(inverse(bf16_to_float(step).astype(np.float64)), x.numel(), inner, ngroups, pos, x.device)
    t = (x.double() - lo) * inv
    t = t + (torch.rand(t.shape, generator=generator, device=x.device, dtype=torch.float64) if stochastic else 0.5)
    return t.floor().clamp_(0, (1 << bits) - 1).to(torch.int32)


def dequantize_torch(sym, lo, step, inner, ngroups, pos, by_pos) -> torch.Tensor:
    where = pos if by_pos else None
    lo_t = _per_value(lo, sym.numel(), inner, ngroups, where, sym.device)
    step_t = _per_value(step, sym.numel(), inner, ngroups, where, sym.device)
    return (lo_t + sym.double() * step_t).float()
