"""b-bit unsigned symbols (1..16 bits) packed LSB-first into exactly ceil(n*b/8) bytes.

Value i occupies stream bits [i*b, (i+1)*b); stream bit p is bit p%8 of byte p//8. Every 64
values fill exactly b 64-bit words, so chunks of 64 values pack and unpack in parallel.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import torch

from worker.codecs.fused import _pack_any

CHUNK = 64  # values per independently packed chunk (= b whole words)


def packed_bytes(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


@nb.njit(parallel=True, cache=True)
def _pack_words(symbols, bits, words):  # pragma: no cover - compiled
    n = symbols.size
    for c in nb.prange((n + CHUNK - 1) // CHUNK):
        start = c * CHUNK
        _pack_any(symbols[start:], min(CHUNK, n - start), bits, words, c * bits)


@nb.njit(parallel=True, cache=True)
def _unpack_words(words, bits, n, out):  # pragma: no cover - compiled
    mask = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    for c in nb.prange((n + CHUNK - 1) // CHUNK):
        w = c * bits
        acc = words[w]
        avail = 64
        for i in range(c * CHUNK, min(c * CHUNK + CHUNK, n)):
            if avail >= bits:
                out[i] = acc & mask
                acc >>= np.uint64(bits)
                avail -= bits
            else:
                w += 1
                nxt = words[w]
                out[i] = (acc | (nxt << np.uint64(avail))) & mask
                acc = nxt >> np.uint64(bits - avail)
                avail = 64 - (bits - avail)


def pack(symbols: np.ndarray, bits: int) -> np.ndarray:
    """uint8 array of ceil(n*bits/8) bytes; symbols must already fit in `bits`."""
    n = symbols.size
    words = np.zeros((n * bits + 63) // 64 + 1, dtype=np.uint64)
    if n:
        _pack_words(np.ascontiguousarray(symbols), bits, words)
    return words.view(np.uint8)[: packed_bytes(n, bits)]


def unpack(words: np.ndarray, bits: int, n: int, dtype=np.uint16) -> np.ndarray:
    """Inverse of `pack`; `words` is a zero-padded uint64 array (see wire.aligned_words)."""
    out = np.empty(n, dtype=dtype)
    if n:
        if words.size < (n * bits + 63) // 64 + 1:
            raise ValueError("bit stream shorter than its symbol count")
        _unpack_words(words, bits, n, out)
    return out


# --------------------------------------------------------------------------- torch (any device)


def pack_torch(symbols: torch.Tensor, bits: int) -> torch.Tensor:
    """Same layout as `pack`, as torch ops on the symbols' device; returns uint8."""
    n = symbols.numel()
    pad = (-n) % 8
    q = torch.nn.functional.pad(symbols.reshape(-1).to(torch.int32), (0, pad))
    shifts = torch.arange(bits, device=q.device, dtype=torch.int32)
    stream = ((q[:, None] >> shifts) & 1).to(torch.uint8).reshape(-1, 8)  # 8 stream bits per output byte
    weights = (1 << torch.arange(8, device=q.device, dtype=torch.int32)).to(torch.uint8)
    packed = (stream * weights).sum(dim=1, dtype=torch.int32).to(torch.uint8)
    return packed[: packed_bytes(n, bits)]


def unpack_torch(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of `pack_torch` (and of `pack`); returns int32 symbols on packed's device."""
    shifts = torch.arange(8, device=packed.device, dtype=torch.int32)
    stream = ((packed.to(torch.int32)[:, None] >> shifts) & 1).reshape(-1)[: n * bits]
    weights = 1 << torch.arange(bits, device=packed.device, dtype=torch.int32)
    return (stream.reshape(n, bits).to(torch.int32) * weights).sum(dim=1, dtype=torch.int32)
