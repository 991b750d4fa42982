"""Triton quantize + bit-pack and unpack + dequantize (+ scatter): quantize.py's maths, on the device.

Same grid and rounding as the numba kernels, bit for bit: min/max in fp32, the step rounded up to
bf16 in float64, symbols floor((x - lo) * (1/step) + 0.5) (or + splitmix64 noise of the value's
position), values lo + q * step in float64, no FMA contraction. Block scales with block % 8 == 0
run as one kernel that reads a tile of blocks once and writes their scales and packed bytes (byte m
of a group of 8 values sums their bits shifted by constants); other layouts reduce min/max with
torch, turn them into scales in a small kernel, then quantize (each byte quantizes the values that
reach it). Readers take each value from the bytes it spans. These kernels are bound by instruction
issue on a GPU, not by memory: benchmarks/triton_sass.py counts their instructions per value.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from worker.codecs.triton_bits import (
    OPTIONS,
    TILE,
    output_bytes,
    pack_constants,
    place,
    reaching,
    read_values,
    store_bytes,
    tile,
)
from worker.codecs.wire import CodecError

NOT_FINITE = "tensor has NaN or inf values; quantization needs finite values (use bits: null)"
OVERFLOW = "value range overflows float32 steps; cannot quantize values spanning more than ~3e38"
FUSED_MAX_BLOCK = 1024  # larger blocks take the two-pass path (a block's tile must fit in registers)


@triton.jit
def _uniform(seed, i):
    """splitmix64 of the position, in [0, 1): fused._uniform."""
    z = seed.to(tl.uint64) + i.to(tl.uint64) * 0x9E3779B97F4A7C15
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    z = z ^ (z >> 31)
    return (z >> 11).to(tl.float64) * (1.0 / 9007199254740992.0)


@triton.jit
def _step_bits(lo, hi, MAXQ: tl.constexpr):
    """bf16 bit pattern (as uint32 << 16) of the smallest bf16 >= (hi - lo) / MAXQ: quantize.bf16_up."""
    v = (hi - lo) / MAXQ
    u = v.to(tl.float32).to(tl.uint32, bitcast=True)
    u = tl.where(v.to(tl.float32).to(tl.float64) < v, u + 1, u)
    return tl.where((u & 0xFFFF) != 0, (u + 0x10000) & 0xFFFF0000, u)


@triton.jit
def _store_scales(scales_ptr, g, valid, lo32, step_u, ngroups):
    """lo (fp32 bytes) at 4*g, step (bf16 bytes) at 4*ngroups + 2*g of the scales section."""
    b = tl.arange(0, 4)[None, :]
    lo_u = lo32.to(tl.uint32, bitcast=True)[:, None]
    tl.store(scales_ptr + 4 * g[:, None] + b, ((lo_u >> (8 * b).to(tl.uint32)) & 0xFF).to(tl.uint8), mask=valid[:, None])
    st = (step_u >> 16)[:, None]
    tl.store(scales_ptr + 4 * ngroups + 2 * g[:, None] + b, ((st >> (8 * b).to(tl.uint32)) & 0xFF).to(tl.uint8),
             mask=valid[:, None] & (b < 2))


@triton.jit
def _symbols(x, lo, inv, idx, seed, MAXQ: tl.constexpr, STOCHASTIC: tl.constexpr):
    t = (x.to(tl.float64) - lo) * inv
    if STOCHASTIC:  # noqa: SIM108 - a constexpr branch, compiled only when taken
        t = t + _uniform(seed, idx)
    else:
        t = t + 0.5
    t = tl.where(t > 0.0, t, 0.0)
    return tl.where(t < MAXQ, t, MAXQ).to(tl.int32)


@triton.jit
def _ordered(u):
    """int32 key whose order is the float order of the bit pattern u (an involution)."""
    return u ^ ((u >> 31) & 0x7FFFFFFF)


def block_constants(bits: int, block: int, packed: bool, values: int = TILE) -> dict:
    """_block_kernel's constexprs for blocks of `block` values, about `values` per program."""
    bp2 = triton.next_power_of_2(block)
    return {"BITS": bits, "MAXQ": (1 << bits) - 1, "BP2": bp2, "ROWS": max(1, values // bp2), "PACKED": packed}


@triton.jit
def _block_kernel(x_ptr, count, block, ngroups, seed, scales_ptr, out_ptr, nbytes, sym_ptr, bad_ptr,
                  BITS: tl.constexpr, MAXQ: tl.constexpr, BP2: tl.constexpr, ROWS: tl.constexpr,
                  STOCHASTIC: tl.constexpr, PACKED: tl.constexpr):
    """ROWS whole blocks per program, as a (block, group of 8, value) tile read once: min/max and scales
    per block, symbols, then byte m of each group (blocks start on a byte: block % 8 == 0) sums its
    values' bits, shifted by constants."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    G: tl.constexpr = BP2 // 8
    g = tl.arange(0, G)[None, :, None]
    c = tl.arange(0, 8)[None, None, :]
    idx = rows[:, None, None] * block + 8 * g + c
    valid = (8 * g + c < block) & (idx < count)
    x = tl.load(x_ptr + idx, mask=valid, other=0.0)
    key = _ordered(x.to(tl.int32, bitcast=True))  # min/max on ordered bits, as fused._finite_minmax (-0.0 < 0.0)
    lo32 = _ordered(tl.min(tl.min(tl.where(valid, key, 0x7FFFFFFF), axis=2), axis=1)).to(tl.float32, bitcast=True)
    hi32 = _ordered(tl.max(tl.max(tl.where(valid, key, -0x80000000), axis=2), axis=1)).to(tl.float32, bitcast=True)
    lo = lo32.to(tl.float64)
    step_u = _step_bits(lo, hi32.to(tl.float64), MAXQ)
    step = step_u.to(tl.float32, bitcast=True).to(tl.float64)
    # on ordered bits +NaN ranks above +inf and -NaN below -inf, so a block holds a NaN or inf iff its min
    # or max is one: a test per block, not per value (every row below ngroups holds at least one value)
    real = rows < ngroups
    not_finite = tl.max(tl.where(real & ~((tl.abs(lo32) < float("inf")) & (tl.abs(hi32) < float("inf"))), 1, 0))
    overflow = tl.max(tl.where(real & (step == float("inf")), 2, 0))
    flag = not_finite | overflow
    tl.atomic_or(bad_ptr, flag, mask=flag != 0)  # no same-address atomic from every program when all is well
    _store_scales(scales_ptr, rows, real, lo32, step_u, ngroups)
    inv = tl.where(step > 0.0, 1.0 / tl.where(step > 0.0, step, 1.0), 0.0)
    q = _symbols(x, lo[:, None, None], inv[:, None, None], idx, seed, MAXQ, STOCHASTIC)
    q = tl.where(valid, q, 0)
    if PACKED:
        gg = tl.arange(0, G)[None, :]
        first = rows[:, None] * (block // 8 * BITS) + gg * BITS  # each group's first byte
        used = (8 * gg < block) & (rows[:, None] * block + 8 * gg < count)
        for m in tl.static_range(BITS):
            at = c * BITS - 8 * m  # where value c's bits start relative to byte m's: constants
            byte = tl.sum(tl.where((at < 8) & (at > -BITS), place(q, at), 0), axis=2)  # bits disjoint: sum = or
            tl.store(out_ptr + first + m, (byte & 0xFF).to(tl.uint8), mask=used & (first + m < nbytes))
    else:
        tl.store(sym_ptr + idx, q, mask=valid)


@triton.jit
def _scales_kernel(lo_ptr, hi_ptr, ngroups, scales_ptr, lo64_ptr, inv_ptr, bad_ptr, MAXQ: tl.constexpr, N: tl.constexpr):
    """Group min/max (fp32) -> scales bytes, and float64 lo and 1/step for the quantize kernel."""
    g = tl.program_id(0) * N + tl.arange(0, N)
    valid = g < ngroups
    lo32 = tl.load(lo_ptr + g, mask=valid, other=0.0)
    hi32 = tl.load(hi_ptr + g, mask=valid, other=0.0)
    empty = ~(lo32 <= hi32)  # groups no value fell into: inf/-inf from the reduction
    lo32 = tl.where(empty, 0.0, lo32)
    hi32 = tl.where(empty, 0.0, hi32)
    step_u = _step_bits(lo32.to(tl.float64), hi32.to(tl.float64), MAXQ)
    step = step_u.to(tl.float32, bitcast=True).to(tl.float64)
    flag = tl.max(tl.where(valid & (step == float("inf")), 2, 0))
    tl.atomic_or(bad_ptr, flag, mask=flag != 0)
    _store_scales(scales_ptr, g, valid, lo32, step_u, ngroups)
    tl.store(lo64_ptr + g, lo32.to(tl.float64), mask=valid)
    tl.store(inv_ptr + g, tl.where(step > 0.0, 1.0 / tl.where(step > 0.0, step, 1.0), 0.0), mask=valid)


def flat_constants(bits: int, packed: bool, values: int = TILE) -> dict:
    """_quant_kernel's constexprs for `values` (a multiple of 8) per program."""
    return {"MAXQ": (1 << bits) - 1, "PACKED": packed, **pack_constants(bits, values)}


@triton.jit
def _scaled(x_ptr, pos_ptr, i, use, inner, ngroups, lo_ptr, inv_ptr, BY_POS: tl.constexpr, ONE_GROUP: tl.constexpr):
    """(value i, lo and 1/step of its scale group): the group by i's own position, or by its original
    one (top-k + channel scales); ONE_GROUP (tensor scales) reads the one group's once, no division."""
    x = tl.load(x_ptr + i, mask=use, other=0.0)
    if ONE_GROUP:
        lo = tl.load(lo_ptr)
        inv = tl.load(inv_ptr)
    else:
        if BY_POS:  # noqa: SIM108 - a constexpr branch, compiled only when taken
            where = tl.load(pos_ptr + i, mask=use, other=0).to(tl.int32)  # positions of an int32-sized tensor
        else:
            where = i
        g = (where // inner) % ngroups
        lo = tl.load(lo_ptr + g, mask=use, other=0.0)
        inv = tl.load(inv_ptr + g, mask=use, other=0.0)
    return x, lo, inv


@triton.jit
def _quant_kernel(x_ptr, pos_ptr, count, inner, ngroups, lo_ptr, inv_ptr, seed, out_ptr, nbytes, sym_ptr,
                  BITS: tl.constexpr, MAXQ: tl.constexpr, BY_POS: tl.constexpr, STOCHASTIC: tl.constexpr,
                  PACKED: tl.constexpr, N: tl.constexpr, NB2: tl.constexpr, K: tl.constexpr, ONE_GROUP: tl.constexpr):
    """Quantize N values with per-group scales looked up by position (tensor, channel, any block size):
    packed, each of their N * BITS / 8 bytes quantizes the K values that reach it; or as int32 symbols."""
    if PACKED:
        o, lanes = output_bytes(N, BITS, NB2)
        acc = tl.zeros((NB2,), tl.int32)
        for k in tl.static_range(K):
            i, at, use = reaching(o, k, lanes, count, BITS)
            x, lo, inv = _scaled(x_ptr, pos_ptr, i, use, inner, ngroups, lo_ptr, inv_ptr, BY_POS, ONE_GROUP)
            acc |= tl.where(use, place(_symbols(x, lo, inv, i, seed, MAXQ, STOCHASTIC), at), 0)
        store_bytes(out_ptr, o, lanes, nbytes, acc)
    else:
        offs = tl.program_id(0) * N + tl.arange(0, N)
        valid = offs < count
        x, lo, inv = _scaled(x_ptr, pos_ptr, offs, valid, inner, ngroups, lo_ptr, inv_ptr, BY_POS, ONE_GROUP)
        tl.store(sym_ptr + offs, _symbols(x, lo, inv, offs, seed, MAXQ, STOCHASTIC), mask=valid)


@triton.jit
def _load_scales(scales_ptr, g, valid, ngroups):
    """(lo, step) as float64 of groups g, from the scales section's bytes."""
    b = tl.arange(0, 4)[None, :]
    lo_b = tl.load(scales_ptr + 4 * g[:, None] + b, mask=valid[:, None], other=0).to(tl.uint32)
    lo = tl.sum(lo_b << (8 * b).to(tl.uint32), axis=1).to(tl.float32, bitcast=True).to(tl.float64)
    st_b = tl.load(scales_ptr + 4 * ngroups + 2 * g[:, None] + b, mask=valid[:, None] & (b < 2), other=0).to(tl.uint32)
    # bytes 2 and 3 are masked to 0; % 32 keeps their shifts (32, 40) defined: a shift by the width or more is
    # poison in LLVM, which the GPU compiler may fold into any value, where numpy (the interpreter) gives 0
    step = tl.sum(st_b << ((8 * b + 16) % 32).to(tl.uint32), axis=1).to(tl.float32, bitcast=True).to(tl.float64)
    return lo, step


@triton.jit
def _dequant_kernel(values_ptr, nbytes, sym_ptr, scales_ptr, lo_ptr, step_ptr, ngroups, inner, pos_ptr, count, out_ptr,
                    BITS: tl.constexpr, PACKED: tl.constexpr, BY_POS: tl.constexpr, SCATTER: tl.constexpr,
                    N: tl.constexpr, ONE_GROUP: tl.constexpr):
    """Unpack (or read symbols), dequantize, write out[i] or out[pos[i]]: one group's scales read from the
    section once, or each value's group's from float64 lo and step arrays (_group_scales)."""
    offs = tl.program_id(0) * N + tl.arange(0, N)
    valid = offs < count
    if PACKED:  # noqa: SIM108 - a constexpr branch, compiled only when taken
        q = read_values(values_ptr, offs, valid, nbytes, BITS)
    else:
        q = tl.load(sym_ptr + offs, mask=valid, other=0)
    if SCATTER:  # noqa: SIM108 - a constexpr branch, compiled only when taken
        pos = tl.load(pos_ptr + offs, mask=valid, other=0)
    else:
        pos = offs.to(tl.int64)
    if ONE_GROUP:  # tensor scales: the one group's, read once
        lo, step = _load_scales(scales_ptr, tl.zeros((1,), tl.int32), tl.full((1,), 1, tl.int1), ngroups)
    else:
        if BY_POS:  # noqa: SIM108 - a constexpr branch, compiled only when taken
            g = (pos.to(tl.int32) // inner) % ngroups  # positions of an int32-sized tensor
        else:
            g = (offs // inner) % ngroups
        lo = tl.load(lo_ptr + g, mask=valid, other=0.0)
        step = tl.load(step_ptr + g, mask=valid, other=0.0)
    tl.store(out_ptr + pos, (lo + q.to(tl.float64) * step).to(tl.float32), mask=valid)


@triton.jit
def _block_dequant_kernel(values_ptr, nbytes, scales_ptr, ngroups, block, pos_ptr, count, out_ptr,
                          BITS: tl.constexpr, BP2: tl.constexpr, ROWS: tl.constexpr, SCATTER: tl.constexpr):
    """ROWS whole blocks per program: each block's scales read once, each value read from its bytes, written."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BP2)[None, :]
    idx = rows[:, None] * block + cols
    valid = (cols < block) & (idx < count)
    lo, step = _load_scales(scales_ptr, rows, rows < ngroups, ngroups)
    q = read_values(values_ptr, idx, valid, nbytes, BITS)
    values = (lo[:, None] + q.to(tl.float64) * step[:, None]).to(tl.float32)
    if SCATTER:  # noqa: SIM108 - a constexpr branch, compiled only when taken
        dest = tl.load(pos_ptr + idx, mask=valid, other=0)
    else:
        dest = idx
    tl.store(out_ptr + dest, values, mask=valid)


def raise_if_bad(bad: torch.Tensor) -> None:
    """Raise CodecError for the refusal flags a quantize kernel set (waits for the device)."""
    flag = int(bad.item())
    if flag & 1:
        raise CodecError(NOT_FINITE)
    if flag & 2:
        raise CodecError(OVERFLOW)


def _minmax(vals: torch.Tensor, inner: int, ngroups: int, pos: torch.Tensor | None):
    """(fp32 per-group min, max, a 0-d bool tensor: all values finite)."""
    n = vals.numel()
    if pos is not None:
        groups = torch.div(pos, inner, rounding_mode="floor") % ngroups
        lo = torch.full((ngroups,), float("inf"), device=vals.device).scatter_reduce(0, groups, vals, "amin")
        hi = torch.full((ngroups,), float("-inf"), device=vals.device).scatter_reduce(0, groups, vals, "amax")
        return lo, hi, torch.isfinite(vals).all()
    if inner * ngroups >= n:  # contiguous groups: one tensor, blocks, or a single sample of channels
        padded = torch.nn.functional.pad(vals, (0, inner * ngroups - n), value=float("nan")).view(ngroups, inner)
        real = torch.arange(inner * ngroups, device=vals.device).view(ngroups, inner) < n
        lo = torch.where(real, padded, float("inf")).amin(dim=1)
        hi = torch.where(real, padded, float("-inf")).amax(dim=1)
    else:  # channels repeating over leading dims
        view = vals.view(-1, ngroups, inner)
        lo, hi = view.amin(dim=(0, 2)), view.amax(dim=(0, 2))
    return lo, hi, torch.isfinite(lo).all() & torch.isfinite(hi).all()  # amin/amax propagate NaN


def quantize(vals: torch.Tensor, bits: int, scale: str, inner: int, ngroups: int, pos: torch.Tensor | None,
             stochastic: bool, seed: int, scales_out: torch.Tensor, values_out: torch.Tensor | None,
             deferred: Callable[[Callable[[], None]], None] | None = None) -> torch.Tensor | None:
    """Write the scales section into `scales_out` (6 * ngroups bytes) and the packed values into
    `values_out` (or, when it is None, return int32 symbols for the entropy stage). `pos` is given
    for channel scales after top-k (groups by original position). Raises CodecError on NaN/inf: now,
    waiting for the device, or, given `deferred` (DevicePayload.defer), when the payload is finished."""
    count, device, maxq = vals.numel(), vals.device, (1 << bits) - 1
    packed = values_out is not None
    symbols = torch.empty(0 if packed else count, dtype=torch.int32, device=device)
    out = values_out if values_out is not None else torch.empty(1, dtype=torch.uint8, device=device)
    if count == 0:
        scales_out.zero_()  # one empty group: lo 0, step 0
        return None if packed else symbols
    bad = torch.zeros(1, dtype=torch.int32, device=device)
    nbytes = out.numel()
    if scale == "block" and inner % 8 == 0 and inner <= FUSED_MAX_BLOCK:
        consts = block_constants(bits, inner, packed, tile(count))
        _block_kernel[(triton.cdiv(ngroups, consts["ROWS"]),)](
            vals, count, inner, ngroups, seed, scales_out, out, nbytes, symbols, bad, STOCHASTIC=stochastic, **consts,
            **OPTIONS)
    else:
        lo32, hi32, finite = _minmax(vals, inner, ngroups, pos)
        lo64 = torch.empty(ngroups, dtype=torch.float64, device=device)
        inv = torch.empty(ngroups, dtype=torch.float64, device=device)
        n = tile(ngroups)
        _scales_kernel[(triton.cdiv(ngroups, n),)](lo32.contiguous(), hi32.contiguous(), ngroups, scales_out, lo64, inv,
                                                   bad, MAXQ=maxq, N=n, **OPTIONS)
        bad |= (~finite).int()
        n = tile(count)
        _quant_kernel[(triton.cdiv(count, n),)](
            vals, vals if pos is None else pos, count, inner, ngroups, lo64, inv, seed, out, nbytes, symbols,
            BY_POS=pos is not None, STOCHASTIC=stochastic, ONE_GROUP=ngroups == 1, **flat_constants(bits, packed, n),
            **OPTIONS)
    if deferred is None:
        raise_if_bad(bad)
    else:
        deferred(lambda: raise_if_bad(bad))
    return None if packed else symbols


def dequantize(values: torch.Tensor | None, symbols: torch.Tensor | None, bits: int, scales: torch.Tensor, scale: str,
               inner: int, ngroups: int, pos: torch.Tensor | None, by_pos: bool, count: int, out: torch.Tensor) -> None:
    """Packed `values` bytes (or int32 `symbols`) -> fp32 into `out`; with `pos`, value i lands at out[pos[i]]."""
    if count == 0:
        return
    if values is not None and scale == "block" and inner % 8 == 0 and inner <= FUSED_MAX_BLOCK:
        bp2 = triton.next_power_of_2(inner)
        rows = max(1, tile(count) // bp2)
        _block_dequant_kernel[(triton.cdiv(ngroups, rows),)](
            values, values.numel(), scales, ngroups, inner, out if pos is None else pos, count, out,
            BITS=bits, BP2=bp2, ROWS=rows, SCATTER=pos is not None, **OPTIONS)
        return
    packed = values is not None
    src = values if values is not None else symbols
    if src is None:
        raise ValueError("dequantize needs packed values or symbols")
    n = tile(count)
    lo, step = (scales, scales) if ngroups == 1 else _group_scales(scales, ngroups)
    _dequant_kernel[(triton.cdiv(count, n),)](
        src, src.numel(), src, scales, lo, step, ngroups, inner, out if pos is None else pos, count, out,
        BITS=bits, PACKED=packed, BY_POS=by_pos, SCATTER=pos is not None, N=n, ONE_GROUP=ngroups == 1, **OPTIONS)


def _group_scales(scales: torch.Tensor, ngroups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, step) of every group as float64, from the scales section (fp32 lows, then bf16 steps): exact,
    as the kernels widen them; the copy aligns a section that starts at any byte."""
    raw = scales[: 6 * ngroups].clone()
    return raw[: 4 * ngroups].view(torch.float32).double(), raw[4 * ngroups :].view(torch.bfloat16).double()
