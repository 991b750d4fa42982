"""The top-k position set on the wire: the cheaper of a bitmap and Rice-coded gaps.

Rice coding is split into two streams so both directions vectorize: a unary stream in which
gap g contributes (g >> p) zeros and a one, and the low p bits of every gap bit-packed. The
ones of the unary stream mark the gaps, so decoding is a nonzero() and a cumsum. When more
than half the positions are kept, the dropped ones are coded instead.

Section: mode u8 (0 bitmap, 1 rice, 2 rice over the complement), p u8, 6 pad bytes,
count u64, unary_bits u64, then the unary bytes and the packed remainders.
"""

from __future__ import annotations

import math
import struct

import numba as nb
import numpy as np
import torch
from numba.cpython.unsafe.numbers import trailing_zeros

from worker.codecs import bitpack
from worker.codecs.wire import CodecError, aligned_words

_HEAD = struct.Struct("<BB6xQQ")
BITMAP, RICE, RICE_COMPLEMENT = 0, 1, 2
MAX_P = 16


def binary_entropy(r: float) -> float:
    return 0.0 if r <= 0 or r >= 1 else float(-r * np.log2(r) - (1 - r) * np.log2(1 - r))


@nb.njit(cache=True)
def _unary_bits(coded, p0):  # pragma: no cover - compiled
    """Unary-stream length for p = p0, p0+1, p0+2: sum of (gap >> p) + 1 over the gaps; all -1 when
    the positions are not increasing from 0 (a negative gap)."""
    s0 = s1 = s2 = 0
    negative = 0
    for i in range(coded.size):  # no loop-carried state but the sums, so it vectorizes
        gap = coded[i] - (coded[i - 1] if i else -1) - 1
        negative |= gap
        s0 += gap >> p0
        s1 += gap >> (p0 + 1)
        s2 += gap >> (p0 + 2)
    if negative < 0:
        return -1, -1, -1
    return s0 + coded.size, s1 + coded.size, s2 + coded.size


@nb.njit(cache=True)
def _rice_write(coded, p, unary_words, low_words):  # pragma: no cover - compiled
    mask = (1 << p) - 1
    prev, pos = -1, 0
    for i in range(coded.size):
        gap = coded[i] - prev - 1
        prev = coded[i]
        pos += gap >> p
        unary_words[pos >> 6] |= np.uint64(1) << np.uint64(pos & 63)
        pos += 1
        if p:
            r = np.uint64(gap & mask)
            bit = i * p
            off = bit & 63
            low_words[bit >> 6] |= r << np.uint64(off)
            if off + p > 64:
                low_words[(bit >> 6) + 1] |= r >> np.uint64(64 - off)


@nb.njit(cache=True)
def _rice_read(unary_words, unary_bits, low_words, p, out):  # pragma: no cover - compiled
    """Decode gaps into positions; returns how many ones the unary stream held (must be out.size)."""
    mask = np.uint64((1 << p) - 1)
    i, prev, last = 0, -1, -1
    for w in range(unary_words.size):
        word = unary_words[w]
        while word != 0:
            pos = w * 64 + np.int64(trailing_zeros(word))  # type: ignore[call-arg]  # numba intrinsic: the context arg is implicit
            if pos >= unary_bits or i >= out.size:
                return -1
            gap = (pos - last - 1) << p
            last = pos
            if p:
                bit = i * p
                off = bit & 63
                r = low_words[bit >> 6] >> np.uint64(off)
                if off + p > 64:
                    r |= low_words[(bit >> 6) + 1] << np.uint64(64 - off)
                gap |= np.int64(r & mask)
            prev += gap + 1
            out[i] = prev
            i += 1
            word &= word - np.uint64(1)
    return i


def _rice_guess(n: int, count: int) -> int:
    """The Rice parameter a geometric gap distribution of mean (n - count) / count favours."""
    mean = (n - count) / max(count, 1)
    return min(MAX_P, max(0, round(math.log2(max(mean * math.log(2), 1.0)))))


def _rice_parameter(coded: np.ndarray, n: int) -> tuple[int, int]:
    """(p, unary_bits) minimising unary_bits + count*p among p near log2(mean gap * ln 2)."""
    count = coded.size
    guess = _rice_guess(n, count)
    p0 = max(0, guess - 1)
    unary = _unary_bits(coded, p0)[: min(MAX_P, guess + 1) + 1 - p0]
    if unary[0] < 0 or (count and coded[-1] >= n):
        raise CodecError(f"{count} positions are not sorted, unique and in [0, {n})")
    best = min(range(len(unary)), key=lambda i: unary[i] + count * (p0 + i))
    return p0 + best, int(unary[best])


@nb.njit(cache=True)
def _complement(idx, n, out):  # pragma: no cover - compiled
    """The positions in [0, n) that sorted `idx` leaves out, in order, into `out`; returns how many
    (-1: more than `out` holds, so `idx` had repeats or positions outside [0, n))."""
    o = 0
    start = 0
    for j in range(idx.size + 1):
        stop = idx[j] if j < idx.size else n
        run = stop - start
        if run > out.size - o:
            return -1
        for i in range(run):  # a simple induction: vectorizes
            out[o + i] = start + i
        o += max(run, 0)
        start = max(start, stop + 1)
    return o


@nb.njit(cache=True)
def _bitmap_write(idx, words):  # pragma: no cover - compiled
    """Set bit p of the little-endian words for each p in idx; False (nothing more set) at one out of range."""
    for j in range(idx.size):
        p = idx[j]
        if p < 0 or p >= words.size * 64:
            return False
        words[p >> 6] |= np.uint64(1) << np.uint64(p & 63)
    return True


@nb.njit(cache=True)
def _bitmap_read(words, n, out):  # pragma: no cover - compiled
    """The set bits below n, in order, into `out`; returns how many (-1: more than out holds)."""
    i = 0
    for w in range(words.size):
        word = words[w]
        while word != 0:
            pos = w * 64 + np.int64(trailing_zeros(word))  # type: ignore[call-arg]  # numba intrinsic
            if pos >= n:
                return i
            if i >= out.size:
                return -1
            out[i] = pos
            i += 1
            word &= word - np.uint64(1)
    return i


def complement_of(idx: np.ndarray, n: int) -> np.ndarray:
    """Sorted unique int64 positions in [0, n) -> the sorted positions they leave out."""
    bad = CodecError(f"{idx.size} positions are not sorted, unique and in [0, {n})")
    if idx.size * 10 < n * 9:
        # numpy's mask + flatnonzero, unless nearly every position is listed: the run-filling kernel then
        # sees mostly empty runs (131K positions: 0.9 listed 312 vs 454 us; 0.6 listed 520 vs 205 us).
        if idx.size and (idx[0] < 0 or idx[-1] >= n):
            raise bad
        mask = np.ones(n, dtype=bool)
        mask[idx] = False
        out = np.flatnonzero(mask)
        if out.size != n - idx.size:
            raise bad
        return out
    out = np.empty(max(n - idx.size, 0), dtype=np.int64)
    if _complement(np.ascontiguousarray(idx, dtype=np.int64), n, out) != out.size:
        raise bad
    return out


def encode(idx: np.ndarray, n: int) -> bytes:
    """Sorted unique int64 positions in [0, n) -> section bytes."""
    k = idx.size
    complement = k > n // 2
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    coded = complement_of(idx, n) if complement else idx
    p, unary = _rice_parameter(coded, n)
    if unary + coded.size * p >= n:  # a bitmap is no larger
        words = np.zeros((n + 63) // 64, dtype=np.uint64)
        if not _bitmap_write(idx, words):
            raise CodecError(f"positions must lie in [0, {n})")
        return _HEAD.pack(BITMAP, 0, k, 0) + words.view(np.uint8)[: (n + 7) // 8].tobytes()
    unary_words = np.zeros(unary // 64 + 2, dtype=np.uint64)
    low_words = np.zeros(coded.size * p // 64 + 2, dtype=np.uint64)
    _rice_write(coded, p, unary_words, low_words)
    mode = RICE_COMPLEMENT if complement else RICE
    return b"".join([_HEAD.pack(mode, p, coded.size, unary), unary_words.view(np.uint8)[: (unary + 7) // 8].tobytes(),
                     low_words.view(np.uint8)[: bitpack.packed_bytes(coded.size, p)].tobytes()])


def _parse(section: memoryview, n: int) -> tuple[int, int, int, int, memoryview, memoryview]:
    if section.nbytes < _HEAD.size:
        raise CodecError("index section is shorter than its header")
    mode, p, count, unary = _HEAD.unpack_from(section, 0)
    body = section[_HEAD.size :]
    if mode == BITMAP:
        if body.nbytes != (n + 7) // 8:
            raise CodecError(f"index bitmap is {body.nbytes} bytes; {n} positions need {(n + 7) // 8}")
        return mode, p, count, unary, body, body[:0]
    if mode not in (RICE, RICE_COMPLEMENT) or p > MAX_P or count > n or unary < count:
        raise CodecError(f"index section header is invalid (mode={mode}, p={p}, count={count})")
    ubytes = (unary + 7) // 8
    if body.nbytes != ubytes + bitpack.packed_bytes(count, p):
        raise CodecError("index section length does not match its Rice stream sizes")
    return mode, p, count, unary, body[:ubytes], body[ubytes:]


def _check(idx: np.ndarray, k: int, n: int) -> None:
    if idx.size != k or (idx.size and (idx[0] < 0 or idx[-1] >= n)):
        raise CodecError(f"index set decodes to {idx.size} positions (expected {k} in [0, {n}))")


def decode(section: memoryview, n: int, k: int) -> np.ndarray:
    """Section bytes -> sorted int64 positions (k of them)."""
    mode, p, count, unary, stream, low = _parse(section, n)
    if mode == BITMAP:
        idx = np.empty(k, dtype=np.int64)
        found = _bitmap_read(aligned_words(stream, 0), n, idx)
        if found != k:
            raise CodecError(f"index bitmap holds {'more than ' + str(k) if found < 0 else found} positions "
                             f"(expected {k} in [0, {n}))")
        return idx
    coded = np.empty(count, dtype=np.int64)
    found = _rice_read(aligned_words(stream), unary, aligned_words(low), p, coded)
    if found != count:
        raise CodecError(f"index Rice stream holds {'more' if found < 0 else found} gaps, header says {count}")
    if mode == RICE_COMPLEMENT:
        _check(coded, n - k, n)
        coded = complement_of(coded, n)
    _check(coded, k, n)
    return coded


# --------------------------------------------------------------------------- torch (any device)


def gaps_torch(idx: torch.Tensor, n: int) -> tuple[bool, torch.Tensor]:
    """(complement?, the gaps between the coded positions): past half full, the dropped positions are coded."""
    complement = idx.numel() > n // 2
    if complement:
        mask = torch.ones(n, dtype=torch.bool, device=idx.device)
        mask[idx] = False
        coded = mask.nonzero().flatten()
    else:
        coded = idx
    return complement, torch.diff(coded, prepend=coded.new_tensor([-1])) - 1


def encode_torch(idx: torch.Tensor, n: int) -> bytes:
    """Same bytes as `encode`, built with torch ops on idx's device."""
    k = idx.numel()
    complement, gaps = gaps_torch(idx, n)
    p, unary = _rice_parameter_torch(gaps, n)
    if unary + gaps.numel() * p >= n:
        mask = torch.zeros(n, dtype=torch.uint8, device=idx.device)
        mask[idx] = 1
        return _HEAD.pack(BITMAP, 0, k, 0) + bitpack.pack_torch(mask, 1).cpu().numpy().tobytes()
    stream = torch.zeros(unary, dtype=torch.uint8, device=idx.device)
    stream[torch.cumsum((gaps >> p) + 1, 0) - 1] = 1
    low = bitpack.pack_torch(gaps & ((1 << p) - 1), p).cpu().numpy().tobytes() if p else b""
    mode = RICE_COMPLEMENT if complement else RICE
    return _HEAD.pack(mode, p, gaps.numel(), unary) + bitpack.pack_torch(stream, 1).cpu().numpy().tobytes() + low


def _rice_parameter_torch(gaps: torch.Tensor, n: int) -> tuple[int, int]:
    guess = _rice_guess(n, gaps.numel())
    candidates = list(range(max(0, guess - 1), min(MAX_P, guess + 1) + 1))
    unary = [int((gaps >> p).sum()) + gaps.numel() for p in candidates]
    best = min(range(len(candidates)), key=lambda i: unary[i] + gaps.numel() * candidates[i])
    return candidates[best], unary[best]


def decode_torch(section: memoryview, n: int, k: int, device) -> torch.Tensor:
    mode, p, count, unary, stream, low = _parse(section, n)
    as_tensor = lambda view: torch.frombuffer(bytearray(view), dtype=torch.uint8).to(device)  # noqa: E731
    if mode == BITMAP:
        idx = bitpack.unpack_torch(as_tensor(stream), 1, n).nonzero().flatten()
    else:
        ones = bitpack.unpack_torch(as_tensor(stream), 1, unary).nonzero().flatten()
        if ones.numel() != count:
            raise CodecError(f"index Rice stream holds {ones.numel()} gaps, header says {count}")
        gaps = (torch.diff(ones, prepend=ones.new_tensor([-1])) - 1) << p
        if p:
            gaps |= bitpack.unpack_torch(as_tensor(low), p, count).long()
        idx = torch.cumsum(gaps + 1, 0) - 1
        if mode == RICE_COMPLEMENT:
            mask = torch.ones(n, dtype=torch.bool, device=device)
            mask[idx[(idx >= 0) & (idx < n)]] = False
            idx = mask.nonzero().flatten()
    if idx.numel() != k or (k and (int(idx[0]) < 0 or int(idx[-1]) >= n)):
        raise CodecError(f"index set decodes to {idx.numel()} positions (expected {k} in [0, {n}))")
    return idx
