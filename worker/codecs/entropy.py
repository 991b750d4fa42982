"""Lossless coding of quantized symbols: canonical Huffman or rANS (ans.py), both numba kernels.

Both code symbols minus the smallest symbol present, with a model built from the counts.
Huffman: lengths by Moffat-Katajainen, limited to 16 bits by flattening counts; codes are
written bit-reversed LSB-first so decoding is one table lookup per symbol; the stream is cut
into word-aligned chunks of CHUNK symbols that encode and decode in parallel.
Model section: kind u8, max length (Huffman) or frequency precision (ANS) u8, 2 pad, offset u32,
alphabet u32, chunks u32, then zlib(lengths u8 | frequencies u16), then per chunk a u64: Huffman
start word, or ANS stream words.
"""

from __future__ import annotations

import struct
import zlib

import numba as nb
import numpy as np

from worker.codecs import ans
from worker.codecs.wire import CodecError, aligned_words

HUFFMAN, ANS = 1, 2
MAX_LEN = 16
CHUNK = 1 << 16
_HEAD = struct.Struct("<BB2xIII")


def empirical_entropy_bits(symbols: np.ndarray) -> float:
    """n * H(symbols) in bits: the bound any symbol-by-symbol lossless coder is measured against."""
    return counts_entropy_bits(np.bincount(symbols.ravel()))


def counts_entropy_bits(counts: np.ndarray) -> float:
    """n * H in bits for a histogram of (possibly fractional, expected) symbol counts."""
    counts = counts[counts > 0].astype(np.float64)
    return float(-(counts * np.log2(counts / counts.sum())).sum()) if counts.size else 0.0


@nb.njit(cache=True)
def _minimum_redundancy(a):  # pragma: no cover - compiled; Moffat & Katajainen, in place, a ascending
    n = a.size
    if n == 1:
        a[0] = 1
        return
    a[0] += a[1]
    root, leaf = 0, 2
    for nxt in range(1, n - 1):
        if leaf >= n or a[root] < a[leaf]:
            a[nxt] = a[root]
            a[root] = nxt
            root += 1
        else:
            a[nxt] = a[leaf]
            leaf += 1
        if leaf >= n or (root < nxt and a[root] < a[leaf]):
            a[nxt] += a[root]
            a[root] = nxt
            root += 1
        else:
            a[nxt] += a[leaf]
            leaf += 1
    a[n - 2] = 0
    for nxt in range(n - 3, -1, -1):
        a[nxt] = a[a[nxt]] + 1
    avail, used, depth, root, nxt = 1, 0, 0, n - 2, n - 1
    while avail > 0:
        while root >= 0 and a[root] == depth:
            used += 1
            root -= 1
        while avail > used:
            a[nxt] = depth
            nxt -= 1
            avail -= 1
        avail = 2 * used
        depth += 1
        used = 0


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code length per symbol (0 for absent ones), none longer than MAX_LEN."""
    lengths = np.zeros(counts.size, dtype=np.uint8)
    present = np.flatnonzero(counts)
    weights = counts[present].astype(np.int64)
    while True:
        order = np.argsort(weights, kind="stable")
        work = weights[order].copy()
        _minimum_redundancy(work)
        if work.max() <= MAX_LEN:
            lengths[present[order]] = work
            return lengths
        weights = np.maximum(weights >> 1, 1)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Bit-reversed canonical codes (LSB-first stream order) for the given lengths."""
    order = np.lexsort((np.arange(lengths.size), lengths))
    order = order[lengths[order] > 0]
    codes = np.zeros(lengths.size, dtype=np.uint64)
    code, prev = 0, 0
    for position, sym in enumerate(order):  # one step per alphabet symbol (<= 2^16), not per element
        length = int(lengths[sym])
        code = (code + 1) << (length - prev) if position else 0
        prev = length
        reversed_code = int(format(code, f"0{length}b")[::-1], 2)
        codes[sym] = reversed_code
    return codes


def decode_table(lengths: np.ndarray, codes: np.ndarray, max_len: int) -> np.ndarray:
    """table[next max_len stream bits] = symbol << 8 | length."""
    table = np.zeros(1 << max_len, dtype=np.int32)
    for sym in np.flatnonzero(lengths):
        length = int(lengths[sym])
        table[int(codes[sym]) + (np.arange(1 << (max_len - length)) << length)] = (int(sym) << 8) | length
    return table


@nb.njit(parallel=True, cache=True)
def _chunk_bits(symbols, lengths, nchunks, out):  # pragma: no cover - compiled
    n = symbols.size
    for c in nb.prange(nchunks):
        total = 0
        for i in range(c * CHUNK, min(c * CHUNK + CHUNK, n)):
            total += lengths[symbols[i]]
        out[c] = total


@nb.njit(parallel=True, cache=True)
def _huffman_encode(symbols, lengths, codes, starts, words):  # pragma: no cover - compiled
    n = symbols.size
    for c in nb.prange(starts.size):
        w = starts[c]
        acc = np.uint64(0)
        nacc = np.int64(0)
        for i in range(c * CHUNK, min(c * CHUNK + CHUNK, n)):
            s = symbols[i]
            code = codes[s]
            length = np.int64(lengths[s])
            acc |= code << np.uint64(nacc)
            nacc += length
            if nacc >= 64:
                words[w] = acc
                w += 1
                nacc -= 64
                acc = (code >> np.uint64(length - nacc)) if nacc > 0 else np.uint64(0)
        if nacc > 0:
            words[w] = acc


@nb.njit(parallel=True, cache=True)
def _huffman_decode(words, table, max_len, starts, limits, n, out):  # pragma: no cover - compiled
    mask = (np.uint64(1) << np.uint64(max_len)) - np.uint64(1)
    bad = np.zeros(starts.size, dtype=np.uint8)
    for c in nb.prange(starts.size):
        pos = np.int64(starts[c]) * 64
        limit = np.int64(limits[c]) * 64
        for i in range(c * CHUNK, min(c * CHUNK + CHUNK, n)):
            if pos >= limit:  # a code must start inside its chunk; this also keeps words[w + 1] in bounds
                bad[c] = 1
                break
            w = pos >> 6
            off = np.uint64(pos & 63)
            peek = words[w] >> off
            if off > 0:
                peek |= words[w + 1] << (np.uint64(64) - off)
            entry = table[peek & mask]
            length = entry & 255
            if length == 0 or pos + length > limit:
                bad[c] = 1
                break
            out[i] = entry >> 8
            pos += length
    return bad.max()


@nb.njit(parallel=True, cache=True)
def _histogram(symbols, parts):  # pragma: no cover - compiled; per-part counts, summed by the caller
    n = symbols.size
    per = -(-n // parts.shape[0])
    for p in nb.prange(parts.shape[0]):
        view, counts = symbols[p * per : min(p * per + per, n)], parts[p]
        for i in range(view.size):
            counts[view[i]] += 1


def _model(symbols: np.ndarray) -> tuple[int, np.ndarray]:
    """(smallest symbol present, counts from it to the largest present)."""
    if symbols.size == 0:
        return 0, np.zeros(1, dtype=np.int64)
    parts = np.zeros((max(1, min(nb.get_num_threads(), -(-symbols.size // CHUNK))), int(symbols.max()) + 1), np.int64)
    _histogram(symbols, parts)
    counts = parts.sum(axis=0)
    present = np.flatnonzero(counts)
    return int(present[0]), counts[present[0] : present[-1] + 1]


def encode(symbols: np.ndarray, kind: str) -> tuple[bytes, bytes | np.ndarray]:
    """uint16 symbols -> (model section, values section)."""
    offset, counts = _model(symbols)
    shifted = (symbols - offset).astype(np.uint16) if offset else symbols
    if counts.size == 1:  # one distinct symbol (or none): the model says it all
        return _HEAD.pack(HUFFMAN if kind == "huffman" else ANS, 0, offset, 1, 0) + zlib.compress(b"", 1), b""
    if kind == "ans":
        precision, freq = ans.choose_precision(counts)
        sizes, values = ans.encode(shifted, freq, precision)
        head = _HEAD.pack(ANS, precision, offset, counts.size, sizes.size)
        return head + zlib.compress(freq.astype(np.uint16).tobytes(), 1) + sizes.tobytes(), values
    lengths = code_lengths(counts)
    codes = canonical_codes(lengths)
    nchunks = -(-symbols.size // CHUNK)
    bits = np.zeros(nchunks, dtype=np.int64)
    _chunk_bits(shifted, lengths, nchunks, bits)
    sizes = (bits + 63) // 64
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    words = np.zeros(int(sizes.sum()) + 1, dtype=np.uint64)
    _huffman_encode(shifted, lengths, codes, starts, words)
    nbytes = int(starts[-1] * 8 + (bits[-1] + 7) // 8) if nchunks else 0
    head = _HEAD.pack(HUFFMAN, int(lengths.max(initial=0)), offset, counts.size, nchunks)
    return head + zlib.compress(lengths.tobytes(), 1) + starts.astype(np.uint64).tobytes(), words.view(np.uint8)[:nbytes]


def decode(model: memoryview, values: memoryview, n: int, bits: int) -> np.ndarray:
    """(model section, values section) -> n uint16 symbols, each < 2^bits."""
    if model.nbytes < _HEAD.size:
        raise CodecError("entropy model section is shorter than its header")
    kind, max_len, offset, alphabet, nchunks = _HEAD.unpack_from(model, 0)
    if kind not in (HUFFMAN, ANS) or max_len > MAX_LEN or alphabet == 0 or offset + alphabet > (1 << bits):
        raise CodecError(f"entropy model header is invalid (kind={kind}, alphabet={alphabet}, offset={offset})")
    table_end = model.nbytes - 8 * nchunks
    if table_end < _HEAD.size:
        raise CodecError("entropy model section is shorter than its chunk table")
    try:
        raw = zlib.decompress(model[_HEAD.size : table_end])
    except zlib.error as exc:
        raise CodecError(f"entropy model does not decompress: {exc}") from None
    if alphabet == 1:
        if values.nbytes or nchunks:
            raise CodecError("entropy stream is not empty for a one-symbol alphabet")
        return np.full(n, offset, dtype=np.uint16)
    if kind == ANS:
        freq = np.frombuffer(raw, dtype=np.uint16)
        if freq.size != alphabet:
            raise CodecError("entropy model frequency table has the wrong size")
        symbols = ans.decode(values, np.frombuffer(model[table_end:], dtype=np.uint64), freq, max_len, n)
    else:
        lengths = np.frombuffer(raw, dtype=np.uint8)
        if lengths.size != alphabet or nchunks != -(-n // CHUNK) or int(lengths.max(initial=0)) != max_len:
            raise CodecError("Huffman model does not match the symbol count")
        if np.sum(np.ldexp(1.0, -lengths[lengths > 0].astype(np.int64))) > 1.0 + 1e-12:
            raise CodecError("Huffman code lengths violate the Kraft inequality")
        table = decode_table(lengths, canonical_codes(lengths), max(max_len, 1))
        starts = np.frombuffer(model[table_end:], dtype=np.uint64).astype(np.int64)
        words = aligned_words(values)
        limits = np.append(starts[1:], words.size - 1)
        if nchunks and (starts[0] != 0 or np.any(np.diff(starts) < 0) or starts[-1] > words.size - 1):
            raise CodecError("Huffman chunk table is inconsistent")
        symbols = np.empty(n, dtype=np.uint16)
        if n and _huffman_decode(words, table, max(max_len, 1), starts, limits, n, symbols):
            raise CodecError("Huffman stream is corrupt")
    return symbols + np.uint16(offset) if offset else symbols
