"""The top-k position set on the wire: the cheaper of a bitmap and Rice-coded gaps.

Rice coding is split into two streams so both directions vectorize: a unary stream in which
gap g contributes (g >> p) zeros and a one, and the low p bits of every gap bit-packed. The
ones of the unary stream mark the gaps, so decoding is a nonzero() and a cumsum. When more
than half the positions are kept, the dropped ones are coded instead.

Section: mode u8 (0 bitmap, 1 rice, 2 rice over the complement), p u8, 6 pad bytes,
count u64, unary_bits u64, then the unary bytes and the packed remainders.
"""

from __future__ import annotations

import struct

import numpy as np
import torch

from worker.codecs import bitpack
from worker.codecs.wire import CodecError, aligned_words

_HEAD = struct.Struct("<BB6xQQ")
BITMAP, RICE, RICE_COMPLEMENT = 0, 1, 2
MAX_P = 16


def binary_entropy(r: float) -> float:
    return 0.0 if r <= 0 or r >= 1 else float(-r * np.log2(r) - (1 - r) * np.log2(1 - r))


def _rice_parameter(gaps: np.ndarray, n: int) -> tuple[int, int]:
    """(p, unary_bits) minimising unary_bits + count*p among p near log2(mean gap * ln 2)."""
    mean = (n - gaps.size) / max(gaps.size, 1)
    guess = int(np.clip(np.round(np.log2(max(mean * np.log(2), 1.0))), 0, MAX_P))
    best = None
    for p in range(max(0, guess - 1), min(MAX_P, guess + 1) + 1):
        unary = int((gaps >> p).sum()) + gaps.size
        if best is None or unary + gaps.size * p < best[1] + gaps.size * best[0]:
            best = (p, unary)
    return best


def encode(idx: np.ndarray, n: int) -> bytes:
    """Sorted unique int64 positions in [0, n) -> section bytes."""
    k = idx.size
    complement = k > n // 2
    if complement:
        mask = np.ones(n, dtype=bool)
        mask[idx] = False
        coded = np.flatnonzero(mask)
    else:
        coded = idx
    gaps = np.diff(coded, prepend=-1) - 1
    p, unary = _rice_parameter(gaps, n)
    if unary + gaps.size * p >= n:  # a bitmap is no larger
        mask = np.zeros(n, dtype=bool)
        mask[idx] = True
        return _HEAD.pack(BITMAP, 0, k, 0) + np.packbits(mask, bitorder="little").tobytes()
    stream = np.zeros(unary, dtype=np.uint8)
    stream[np.cumsum((gaps >> p) + 1) - 1] = 1
    low = bitpack.pack(gaps & ((1 << p) - 1), p) if p else b""
    mode = RICE_COMPLEMENT if complement else RICE
    return _HEAD.pack(mode, p, coded.size, unary) + np.packbits(stream, bitorder="little").tobytes() + bytes(low)


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
        idx = np.flatnonzero(np.unpackbits(np.frombuffer(stream, dtype=np.uint8), count=n, bitorder="little"))
        _check(idx, k, n)
        return idx
    ones = np.flatnonzero(np.unpackbits(np.frombuffer(stream, dtype=np.uint8), count=unary, bitorder="little"))
    if ones.size != count:
        raise CodecError(f"index Rice stream holds {ones.size} gaps, header says {count}")
    gaps = (np.diff(ones, prepend=-1) - 1) << p
    if p:
        gaps |= bitpack.unpack(aligned_words(low), p, count, dtype=np.int64)
    coded = np.cumsum(gaps + 1) - 1
    if mode == RICE_COMPLEMENT:
        _check(coded, n - k, n)
        mask = np.ones(n, dtype=bool)
        mask[coded] = False
        coded = np.flatnonzero(mask)
    _check(coded, k, n)
    return coded


# --------------------------------------------------------------------------- torch (any device)


def encode_torch(idx: torch.Tensor, n: int) -> bytes:
    """Same bytes as `encode`, built with torch ops on idx's device."""
    k = idx.numel()
    complement = k > n // 2
    if complement:
        mask = torch.ones(n, dtype=torch.bool, device=idx.device)
        mask[idx] = False
        coded = mask.nonzero().flatten()
    else:
        coded = idx
    gaps = torch.diff(coded, prepend=coded.new_tensor([-1])) - 1
    p, unary = _rice_parameter_torch(gaps, n)
    if unary + gaps.numel() * p >= n:
        mask = torch.zeros(n, dtype=torch.uint8, device=idx.device)
        mask[idx] = 1
        return _HEAD.pack(BITMAP, 0, k, 0) + bitpack.pack_torch(mask, 1).cpu().numpy().tobytes()
    stream = torch.zeros(unary, dtype=torch.uint8, device=idx.device)
    stream[torch.cumsum((gaps >> p) + 1, 0) - 1] = 1
    low = bitpack.pack_torch(gaps & ((1 << p) - 1), p).cpu().numpy().tobytes() if p else b""
    mode = RICE_COMPLEMENT if complement else RICE
    return _HEAD.pack(mode, p, coded.numel(), unary) + bitpack.pack_torch(stream, 1).cpu().numpy().tobytes() + low


def _rice_parameter_torch(gaps: torch.Tensor, n: int) -> tuple[int, int]:
    mean = (n - gaps.numel()) / max(gaps.numel(), 1)
    guess = int(np.clip(np.round(np.log2(max(mean * np.log(2), 1.0))), 0, MAX_P))
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
