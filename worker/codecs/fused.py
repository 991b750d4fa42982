"""Fused numba kernels: per-group min/max, quantize+bit-pack, unpack+dequantize (+scatter).

Work is cut into sub-chunks of 64 values (64*b bits = b whole words, see bitpack.py) and
tasks of TASK sub-chunks run in parallel. Within a sub-chunk the arithmetic runs over small
buffers so LLVM can vectorize it; when the sub-chunk lies in one scale group (block sizes
that are multiples of 64, per-tensor scales) the scale is a scalar.
"""

from __future__ import annotations

from contextlib import contextmanager

import numba as nb
import numpy as np

SUB = 64
TASK = 1024
PARALLEL_MIN = 1 << 21  # below this many values, waking the thread pool costs more than it saves


@contextmanager
def threads_for(n: int):
    """Run the parallel kernels inside on the calling thread alone when `n` is small."""
    if n >= PARALLEL_MIN or nb.get_num_threads() == 1:
        yield
        return
    before = nb.get_num_threads()
    nb.set_num_threads(1)  # thread-local in numba
    try:
        yield
    finally:
        nb.set_num_threads(before)


@nb.njit(parallel=True, fastmath=True, cache=True)
def run_minmax(x, run, lo, hi, sums):  # pragma: no cover - compiled
    """min, max and sum of each contiguous run of `run` values (sum exposes NaN/inf)."""
    n = x.size
    for r in nb.prange(lo.size):
        a, b, s = np.float32(np.inf), np.float32(-np.inf), 0.0
        for i in range(r * run, min(r * run + run, n)):
            v = x[i]
            a = min(a, v)
            b = max(b, v)
            s += v
        lo[r], hi[r], sums[r] = a, b, s


@nb.njit(cache=True)
def moments(x):  # pragma: no cover - compiled
    """(sum, mean, variance about the mean, largest |value - mean|) of float32 `x` in float64, two passes.
    Eight running sums in a fixed order: vectorizable, and the same figures on every machine (no fast-math
    reassociation). The sum is NaN or inf exactly when a value is."""
    n = x.size
    n8 = n - n % 8
    lanes = np.zeros(8)
    for i in range(0, n8, 8):
        for j in range(8):
            lanes[j] += x[i + j]
    total = 0.0
    for j in range(8):
        total += lanes[j]
    for i in range(n8, n):
        total += x[i]
    mean = total / n if n else 0.0
    squares, peaks = np.zeros(8), np.zeros(8)
    for i in range(0, n8, 8):
        for j in range(8):
            d = np.float64(x[i + j]) - mean
            squares[j] += d * d
            a = abs(d)
            peaks[j] = a if a > peaks[j] else peaks[j]
    ss, peak = 0.0, 0.0
    for j in range(8):
        ss += squares[j]
        peak = peaks[j] if peaks[j] > peak else peak
    for i in range(n8, n):
        d = np.float64(x[i]) - mean
        ss += d * d
        a = abs(d)
        peak = a if a > peak else peak
    return total, mean, (ss / n if n else 0.0), peak


@nb.njit(inline="always")
def bf16_up(v, f32, u32):  # pragma: no cover - compiled; smallest bf16 >= v >= 0, via a 1-slot bit view
    f32[0] = np.float32(v)
    if np.float64(f32[0]) < v:
        u32[0] += np.uint32(1)
    if u32[0] & np.uint32(0xFFFF):
        u32[0] = (u32[0] + np.uint32(0x10000)) & np.uint32(0xFFFF0000)
    return np.float64(f32[0])


@nb.njit(cache=True)
def minmax_by_position(x, pos, inner, ngroups, lo, hi):  # pragma: no cover - compiled
    """Per-group min/max of values grouped by their original position (channel scales after top-k)."""
    s = 0.0
    for i in range(x.size):
        g = (pos[i] // inner) % ngroups
        v = np.float64(x[i])
        lo[g] = min(lo[g], v)
        hi[g] = max(hi[g], v)
        s += v - v
    return s


@nb.njit(inline="always")
def _uniform(seed, i):  # pragma: no cover - compiled; splitmix64 of the position, in [0, 1)
    z = np.uint64(seed) + np.uint64(i) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@nb.njit(inline="always")
def _params(i0, m, inner, ngroups, pos, by_pos, a, b, a_buf, b_buf):  # pragma: no cover - compiled
    """Scale pair per value of the sub-chunk; True (and only slot 0 filled) if it is one group."""
    if by_pos:
        for j in range(m):
            g = (pos[i0 + j] // inner) % ngroups
            a_buf[j], b_buf[j] = a[g], b[g]
        return False
    g = (i0 // inner) % ngroups
    rem = i0 % inner
    if rem + m <= inner:
        a_buf[0], b_buf[0] = a[g], b[g]
        return True
    for j in range(m):
        a_buf[j], b_buf[j] = a[g], b[g]
        rem += 1
        if rem == inner:
            rem = 0
            g = g + 1 if g + 1 < ngroups else 0
    return False


@nb.njit(inline="always")
def _symbol(t, maxq):  # pragma: no cover - compiled; clamp and truncate (ternaries vectorize, min/max do not)
    t = t if t > 0.0 else 0.0
    return np.int32(t if t < maxq else maxq)


@nb.njit(inline="always")
def _symbols(x, i0, m, one, lo_buf, inv_buf, maxq, stochastic, seed, q):  # pragma: no cover - compiled
    xv = x[i0 : i0 + m]  # a view indexed from 0: no negative-index wraparound, so the loops vectorize
    if one and not stochastic:
        lo, inv = lo_buf[0], inv_buf[0]
        for j in range(m):
            q[j] = _symbol((np.float64(xv[j]) - lo) * inv + 0.5, maxq)
    else:
        for j in range(m):
            k = 0 if one else j
            t = (np.float64(xv[j]) - lo_buf[k]) * inv_buf[k]
            q[j] = _symbol(t + (_uniform(seed, i0 + j) if stochastic else 0.5), maxq)


@nb.njit(inline="always")
def _pack_fixed(q, m, bits, words, w):  # pragma: no cover - compiled; 64 % bits == 0, bits a literal
    per = 64 // bits
    for k in range((m + per - 1) // per):
        acc = np.uint64(0)
        for j in range(min(per, m - k * per)):
            acc |= np.uint64(q[k * per + j]) << np.uint64(j * bits)
        words[w + k] = acc


@nb.njit(inline="always")
def _pack_any(q, m, bits, words, w):  # pragma: no cover - compiled
    acc = np.uint64(0)
    nacc = 0
    for j in range(m):
        v = np.uint64(q[j])
        acc |= v << np.uint64(nacc)
        nacc += bits
        if nacc >= 64:
            words[w] = acc
            w += 1
            nacc -= 64
            acc = (v >> np.uint64(bits - nacc)) if nacc > 0 else np.uint64(0)
    if nacc > 0:
        words[w] = acc


@nb.njit(inline="always")
def _pack(q, m, bits, words, w):  # pragma: no cover - compiled; literal widths unroll
    if bits == 1:
        _pack_fixed(q, m, 1, words, w)
    elif bits == 2:
        _pack_fixed(q, m, 2, words, w)
    elif bits == 4:
        _pack_fixed(q, m, 4, words, w)
    elif bits == 8:
        _pack_fixed(q, m, 8, words, w)
    elif bits == 16:
        _pack_fixed(q, m, 16, words, w)
    else:
        _pack_any(q, m, bits, words, w)


@nb.njit(inline="always")
def _unpack_fixed(words, w, bits, m, q):  # pragma: no cover - compiled
    mask = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    per = 64 // bits
    for k in range((m + per - 1) // per):
        acc = words[w + k]
        for j in range(min(per, m - k * per)):
            q[k * per + j] = np.int32((acc >> np.uint64(j * bits)) & mask)


@nb.njit(inline="always")
def _unpack_any(words, w, bits, m, q):  # pragma: no cover - compiled
    mask = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    acc = words[w]
    avail = 64
    for j in range(m):
        if avail >= bits:
            q[j] = np.int32(acc & mask)
            acc >>= np.uint64(bits)
            avail -= bits
        else:
            w += 1
            nxt = words[w]
            q[j] = np.int32((acc | (nxt << np.uint64(avail))) & mask)
            acc = nxt >> np.uint64(bits - avail)
            avail = 64 - (bits - avail)


@nb.njit(inline="always")
def _unpack(words, w, bits, m, q):  # pragma: no cover - compiled
    if bits == 1:
        _unpack_fixed(words, w, 1, m, q)
    elif bits == 2:
        _unpack_fixed(words, w, 2, m, q)
    elif bits == 4:
        _unpack_fixed(words, w, 4, m, q)
    elif bits == 8:
        _unpack_fixed(words, w, 8, m, q)
    elif bits == 16:
        _unpack_fixed(words, w, 16, m, q)
    else:
        _unpack_any(words, w, bits, m, q)


@nb.njit(inline="always")
def _pack_groups(q, bits, words, w):  # pragma: no cover - compiled; 64 values, any width, `bits` a literal
    """Eight groups of 8 values; a group is exactly `bits` bytes, so its offset and every shift are
    constants once `bits` is, and nothing carries from one value to the next (2-4x the serial loop)."""
    for g in range(8):
        lo, hi = np.uint64(0), np.uint64(0)  # the group's 8*bits (<= 128) bits
        for j in range(8):
            v, at = np.uint64(q[g * 8 + j]), j * bits
            if at < 64:
                lo |= v << np.uint64(at)
                if at + bits > 64:
                    hi |= v >> np.uint64(64 - at)
            else:
                hi |= v << np.uint64(at - 64)
        start = g * 8 * bits
        first, last, sh = start // 64, (start + 8 * bits - 1) // 64, start % 64
        if sh == 0:
            words[w + first] = lo
            if last > first:
                words[w + first + 1] = hi
        else:  # the previous group assigned words[w + first]; only this sub-chunk's words are touched
            words[w + first] |= lo << np.uint64(sh)
            if last > first:
                words[w + first + 1] = (lo >> np.uint64(64 - sh)) | (hi << np.uint64(sh))
            if last > first + 1:
                words[w + first + 2] = hi >> np.uint64(64 - sh)


@nb.njit(inline="always")
def _unpack_groups(words, w, bits, q):  # pragma: no cover - compiled; inverse of _pack_groups
    mask = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    for g in range(8):
        start = g * 8 * bits
        first, last, sh = start // 64, (start + 8 * bits - 1) // 64, start % 64
        lo = words[w + first]
        hi = words[w + first + 1] if last > first else np.uint64(0)
        if sh:
            top = words[w + first + 2] if last > first + 1 else np.uint64(0)
            lo = (lo >> np.uint64(sh)) | (hi << np.uint64(64 - sh))
            hi = (hi >> np.uint64(sh)) | (top << np.uint64(64 - sh))
        for j in range(8):
            at = j * bits
            if at < 64:
                v = lo >> np.uint64(at)
                if at + bits > 64:
                    v |= hi << np.uint64(64 - at)
            else:
                v = hi >> np.uint64(at - 64)
            q[g * 8 + j] = np.int32(v & mask)


def _width_kernels(bits: int):
    """Pack and unpack of one whole sub-chunk (64 values) at one width. `bits` is a closure constant,
    so shifts, offsets and trip counts are literals that LLVM unrolls; each width compiles once (and
    is cached), and every kernel calls it, instead of inlining sixteen copies into each kernel."""
    if 64 % bits == 0:

        @nb.njit(cache=True)
        def pack(q, words, w):  # pragma: no cover - compiled
            _pack_fixed(q, SUB, bits, words, w)

        @nb.njit(cache=True)
        def unpack(words, w, q):  # pragma: no cover - compiled
            _unpack_fixed(words, w, bits, SUB, q)

        return pack, unpack

    @nb.njit(cache=True)
    def pack_groups(q, words, w):  # pragma: no cover - compiled
        _pack_groups(q, bits, words, w)

    @nb.njit(cache=True)
    def unpack_groups(words, w, q):  # pragma: no cover - compiled
        _unpack_groups(words, w, bits, q)

    return pack_groups, unpack_groups


(_P1, _U1), (_P2, _U2), (_P3, _U3), (_P4, _U4), (_P5, _U5), (_P6, _U6), (_P7, _U7), (_P8, _U8), \
    (_P9, _U9), (_P10, _U10), (_P11, _U11), (_P12, _U12), (_P13, _U13), (_P14, _U14), (_P15, _U15), \
    (_P16, _U16) = (_width_kernels(b) for b in range(1, 17))


@nb.njit(inline="always")
def _pack_full(q, bits, words, w):  # pragma: no cover - compiled; one whole sub-chunk
    if bits == 1:
        _P1(q, words, w)
    elif bits == 2:
        _P2(q, words, w)
    elif bits == 3:
        _P3(q, words, w)
    elif bits == 4:
        _P4(q, words, w)
    elif bits == 5:
        _P5(q, words, w)
    elif bits == 6:
        _P6(q, words, w)
    elif bits == 7:
        _P7(q, words, w)
    elif bits == 8:
        _P8(q, words, w)
    elif bits == 9:
        _P9(q, words, w)
    elif bits == 10:
        _P10(q, words, w)
    elif bits == 11:
        _P11(q, words, w)
    elif bits == 12:
        _P12(q, words, w)
    elif bits == 13:
        _P13(q, words, w)
    elif bits == 14:
        _P14(q, words, w)
    elif bits == 15:
        _P15(q, words, w)
    else:
        _P16(q, words, w)


@nb.njit(inline="always")
def _unpack_full(words, w, bits, q):  # pragma: no cover - compiled; one whole sub-chunk
    if bits == 1:
        _U1(words, w, q)
    elif bits == 2:
        _U2(words, w, q)
    elif bits == 3:
        _U3(words, w, q)
    elif bits == 4:
        _U4(words, w, q)
    elif bits == 5:
        _U5(words, w, q)
    elif bits == 6:
        _U6(words, w, q)
    elif bits == 7:
        _U7(words, w, q)
    elif bits == 8:
        _U8(words, w, q)
    elif bits == 9:
        _U9(words, w, q)
    elif bits == 10:
        _U10(words, w, q)
    elif bits == 11:
        _U11(words, w, q)
    elif bits == 12:
        _U12(words, w, q)
    elif bits == 13:
        _U13(words, w, q)
    elif bits == 14:
        _U14(words, w, q)
    elif bits == 15:
        _U15(words, w, q)
    else:
        _U16(words, w, q)


@nb.njit(inline="always")
def _dequant(q, m, one, lo_buf, step_buf, pos, scatter, i0, out):  # pragma: no cover - compiled
    if one and not scatter:
        lo, step = lo_buf[0], step_buf[0]
        o = out[i0 : i0 + m]  # views indexed from 0, as in _symbols
        for j in range(m):
            o[j] = lo + np.float64(q[j]) * step
    elif scatter:
        where = pos[i0 : i0 + m]
        for j in range(m):
            k = 0 if one else j
            out[where[j]] = lo_buf[k] + np.float64(q[j]) * step_buf[k]
    else:
        o = out[i0 : i0 + m]
        for j in range(m):
            o[j] = lo_buf[j] + np.float64(q[j]) * step_buf[j]


@nb.njit(cache=True)
def _quant_task(x, lo, inv, bits, inner, ngroups, pos, by_pos, stochastic, seed, packed, words, symbols, s0, s1):  # pragma: no cover
    n = x.size
    maxq = np.float64((1 << bits) - 1)
    q = np.empty(SUB, dtype=np.int32)
    lo_buf = np.empty(SUB, dtype=np.float64)
    inv_buf = np.empty(SUB, dtype=np.float64)
    for s in range(s0, s1):
        i0 = s * SUB
        m = min(SUB, n - i0)
        one = _params(i0, m, inner, ngroups, pos, by_pos, lo, inv, lo_buf, inv_buf)
        _symbols(x, i0, m, one, lo_buf, inv_buf, maxq, stochastic, seed, q)
        if packed and m == SUB:
            _pack_full(q, bits, words, s * bits)
        elif packed:
            _pack(q, m, bits, words, s * bits)
        else:
            for j in range(m):
                symbols[i0 + j] = q[j]


@nb.njit(parallel=True, cache=True)
def quant_pack(x, lo, inv, bits, inner, ngroups, pos, by_pos, stochastic, seed, packed, words, symbols):  # pragma: no cover
    """Quantize x; bit-pack into `words` if `packed`, else write uint16 `symbols`."""
    nsub = (x.size + SUB - 1) // SUB
    for t in nb.prange((nsub + TASK - 1) // TASK):
        _quant_task(x, lo, inv, bits, inner, ngroups, pos, by_pos, stochastic, seed, packed, words, symbols,
                    t * TASK, min(t * TASK + TASK, nsub))


@nb.njit(cache=True)
def _dequant_task(words, symbols, packed, bits, lo, step, inner, ngroups, pos, by_pos, scatter, n, out, s0, s1):  # pragma: no cover
    q = np.empty(SUB, dtype=np.int32)
    lo_buf = np.empty(SUB, dtype=np.float64)
    step_buf = np.empty(SUB, dtype=np.float64)
    for s in range(s0, s1):
        i0 = s * SUB
        m = min(SUB, n - i0)
        if packed and m == SUB:
            _unpack_full(words, s * bits, bits, q)
        elif packed:
            _unpack(words, s * bits, bits, m, q)
        else:
            for j in range(m):
                q[j] = symbols[i0 + j]
        one = _params(i0, m, inner, ngroups, pos, by_pos, lo, step, lo_buf, step_buf)
        _dequant(q, m, one, lo_buf, step_buf, pos, scatter, i0, out)


@nb.njit(cache=True)
def _dequant_task_tiled(words, bits, lo, step, inner, ngroups, n, out, s0, s1):  # pragma: no cover
    """Packed values in groups that tile whole sub-chunks (one group, or inner % 64 == 0): the
    group advances by counting, and whole sub-chunks take the literal-width unpack."""
    q = np.empty(SUB, dtype=np.int32)
    g = (s0 * SUB // inner) % ngroups
    rem = s0 * SUB % inner
    for s in range(s0, s1):
        i0 = s * SUB
        a, d = lo[g], step[g]
        o = out[i0 : i0 + SUB]  # a view indexed from 0: no negative-index wraparound, so it vectorizes
        if o.size == SUB:
            _unpack_full(words, s * bits, bits, q)
        else:
            _unpack(words, s * bits, bits, o.size, q)
        for j in range(o.size):
            o[j] = a + np.float64(q[j]) * d
        rem += SUB
        if rem >= inner and ngroups > 1:
            rem = 0
            g = g + 1 if g + 1 < ngroups else 0


@nb.njit(parallel=True, cache=True)
def unpack_dequant(words, symbols, packed, bits, lo, step, inner, ngroups, pos, by_pos, scatter, n, out):  # pragma: no cover
    """Inverse of quant_pack; with `scatter`, value i lands at out[pos[i]]."""
    nsub = (n + SUB - 1) // SUB
    tiled = packed and not by_pos and not scatter and (ngroups == 1 or inner % SUB == 0)
    for t in nb.prange((nsub + TASK - 1) // TASK):
        if tiled:
            _dequant_task_tiled(words, bits, lo, step, inner, ngroups, n, out, t * TASK, min(t * TASK + TASK, nsub))
        else:
            _dequant_task(words, symbols, packed, bits, lo, step, inner, ngroups, pos, by_pos, scatter, n, out,
                          t * TASK, min(t * TASK + TASK, nsub))


@nb.njit(inline="always")
def _ordered(u):  # pragma: no cover - compiled; int32 key whose order is the float order (NaN aside)
    return u ^ ((u >> np.int32(31)) & np.int32(0x7FFFFFFF))


@nb.njit(inline="always")
def _finite_minmax(bits32, f32, i32):  # pragma: no cover - compiled; (min, max, all finite?) of a block
    """On the values' int32 bit patterns: integer min/max of order keys and a max of |bits| vectorize
    where float selects do not (LLVM wants function-level no-NaN attributes numba does not set)."""
    a, b, top = np.int32(0x7FFFFFFF), np.int32(-0x80000000), np.int32(0)
    for i in range(bits32.size):
        u = bits32[i]
        k, m = _ordered(u), u & np.int32(0x7FFFFFFF)
        a = k if k < a else a
        b = k if k > b else b
        top = m if m > top else top
    i32[0] = _ordered(a)
    lo = f32[0]
    i32[0] = _ordered(b)
    return lo, f32[0], top < np.int32(0x7F800000)


@nb.njit(cache=True)
def _block_task(x, bits32, block, bits, stochastic, seed, packed, lo_out, step_out, words, symbols, g0, g1):  # pragma: no cover
    """Blocks g0..g1: min/max, bf16 step, quantize, pack; returns 1 if a block holds NaN/inf.
    Each block is read from memory once; the quantize pass re-reads it from L1. No fastmath: without
    contraction or reassociation the symbols are bit-identical to the torch backend's."""
    n = x.size
    maxq = np.float64((1 << bits) - 1)
    q = np.empty(SUB, dtype=np.int32)
    lo_buf = np.empty(1, dtype=np.float64)
    inv_buf = np.empty(1, dtype=np.float64)
    f32 = np.empty(1, dtype=np.float32)
    u32, i32 = f32.view(np.uint32), f32.view(np.int32)
    for g in range(g0, g1):
        i0, i1 = g * block, min(g * block + block, n)
        xb = x[i0:i1]  # indexing a block view from 0 lets LLVM drop negative-index wraparound and vectorize
        lo32, hi32, finite = _finite_minmax(bits32[i0:i1], f32, i32)
        if not finite:
            return 1
        lo = np.float64(lo32)
        step = bf16_up((np.float64(hi32) - lo) / maxq, f32, u32)
        lo_out[g], step_out[g] = lo32, step
        inv = 1.0 / step if step > 0.0 else 0.0
        if xb.size == block and packed and not stochastic:  # the common case: literal widths, constant trip counts
            for c in range(block // SUB):
                for j in range(SUB):
                    q[j] = _symbol((np.float64(xb[c * SUB + j]) - lo) * inv + 0.5, maxq)
                _pack_full(q, bits, words, (i0 // SUB + c) * bits)
            continue
        lo_buf[0], inv_buf[0] = lo, inv
        for i in range(i0, i1, SUB):
            m = min(SUB, i1 - i)
            _symbols(x, i, m, True, lo_buf, inv_buf, maxq, stochastic, seed, q)
            if packed:
                _pack(q, m, bits, words, (i // SUB) * bits)
            else:
                for j in range(m):
                    symbols[i + j] = q[j]
    return 0


@nb.njit(parallel=True, cache=True)
def block_quant_pack(x, block, bits, stochastic, seed, packed, lo_out, step_out, bad, words, symbols):  # pragma: no cover
    """One pass for block scales (block % 64 == 0): min/max, scale, quantize, pack, block by block."""
    per_task = max(1, (1 << 16) // block)
    bits32 = x.view(np.int32)
    for t in nb.prange(bad.size):
        bad[t] = _block_task(x, bits32, block, bits, stochastic, seed, packed, lo_out, step_out, words, symbols,
                             t * per_task, min(t * per_task + per_task, lo_out.size))
