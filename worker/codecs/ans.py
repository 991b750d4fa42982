"""rANS over quantized symbols: numba kernels, one independent stream per CHUNK symbols.

32-bit state in [L, 2^32) with L = 2^16, 16-bit renormalisation words, and a model of
frequencies that sum to 2^precision (precision <= 16, every present symbol >= 1), so each
symbol emits at most one word and decoding is one table lookup. Streams code on all cores.

This replaced constriction (0.5.0), whose coder holds the GIL: two threads decoded two
streams slower than one thread did, at ~52 M symbols/s, which capped dense entropy coding
of a 16M-element tensor at 0.12 GB/s round trip on two cores.

A stream: the final encoder state as two words (high, low), then the renormalisation words
in decoding order. The decoder must end in the initial state L with every word consumed.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from worker.codecs.wire import CodecError

CHUNK = 1 << 16
L = 1 << 16  # lower bound of the normalised state
MAX_PRECISION = 16


def cross_entropy_bits(counts: np.ndarray, freq: np.ndarray, precision: int) -> float:
    """Bits rANS spends on `counts` coded with `freq` (stream overhead aside)."""
    present = counts > 0
    return float(-(counts[present] * (np.log2(freq[present]) - precision)).sum())


def choose_precision(counts: np.ndarray) -> tuple[int, np.ndarray]:
    """The smallest frequency scale (12..16 bits) within 0.1% of the best one's coded size: a small
    decode table stays in L1, while skewed counts (one symbol at p > 0.99) need the finer scale."""
    options = []
    for precision in range(12, MAX_PRECISION + 1):
        if int((counts > 0).sum()) <= 1 << precision:
            freq = normalize(counts, precision)
            options.append((cross_entropy_bits(counts, freq, precision), precision, freq))
    if not options:
        raise CodecError(f"{int((counts > 0).sum())} distinct symbols do not fit a 2^{MAX_PRECISION} frequency scale")
    best = min(bits for bits, _, _ in options)
    return next((precision, freq) for bits, precision, freq in options if bits <= best * 1.001 + 64)


def normalize(counts: np.ndarray, precision: int) -> np.ndarray:
    """Frequencies summing to 2^precision, >= 1 for every present symbol, close to counts."""
    total, scale = int(counts.sum()), 1 << precision
    present = counts > 0
    if int(present.sum()) > scale:
        raise CodecError(f"{int(present.sum())} distinct symbols do not fit a 2^{precision} frequency scale")
    freq = np.where(present, np.maximum(1, np.floor(counts * (scale / total) + 0.5)), 0).astype(np.int64)
    excess = int(freq.sum()) - scale  # settle the rounding difference on the most frequent symbols
    for s in np.argsort(-freq, kind="stable"):
        if excess == 0 or freq[s] <= 1:
            break
        step = min(excess, int(freq[s]) - 1)  # negative excess: the top symbol takes it all
        freq[s] -= step
        excess -= step
    return freq


# The bytes are those of the textbook loop (x = (x // f << precision) + x % f + cum, one stream at a
# time), computed faster. The encoder replaces the division by a multiplication with a magic number per
# symbol, exact for every 32-bit x (Granlund & Montgomery 1994, as compilers divide by constants); the
# decoder reads one packed (freq, slot - cum) entry per symbol. A stream's update waits on its previous
# one, so whole streams advance together, two in the encoder, four (then two) in the decoder, with
# branch-free renormalisation: on one thread of the 2-core VM, 4-bit symbols encoded at 119 and decoded at
# 172 M symbols/s before, 368 and 451 after (docs/results.md).


@nb.njit(inline="always")
def _put(x, s, cum, magic, sh1, sh2, cmpl):  # pragma: no cover - compiled
    """One encoder step on a renormalised state: (x // f << precision) + x % f + cum[s], by multiplying."""
    t = (x * magic[s]) >> np.uint64(32)
    return x + cum[s] + ((t + ((x - t) >> sh1[s])) >> sh2[s]) * cmpl[s]


@nb.njit(cache=True)
def _encode_one(symbols, cum, magic, sh1, sh2, cmpl, xmax, buf):  # pragma: no cover - compiled
    """Encode symbols (last to first) into the tail of buf; returns where the stream starts."""
    ptr = buf.size
    x = np.uint64(L)
    for i in range(symbols.size - 1, -1, -1):
        s = symbols[i]
        if x >= xmax[s]:
            ptr -= 1
            buf[ptr] = x & np.uint64(0xFFFF)
            x >>= np.uint64(16)
        x = _put(x, s, cum, magic, sh1, sh2, cmpl)
    buf[ptr - 2] = x >> np.uint64(16)
    buf[ptr - 1] = x & np.uint64(0xFFFF)
    return ptr - 2


@nb.njit(cache=True)
def _encode_two(sa, sb, cum, magic, sh1, sh2, cmpl, xmax, ba, bb):  # pragma: no cover - compiled
    """Two streams of equal length at once; a word is always written below the stream and kept only when
    the state sheds it, so no branch depends on the data. Returns both starts."""
    qa, qb = ba.size, bb.size
    xa, xb = np.uint64(L), np.uint64(L)
    for i in range(sa.size - 1, -1, -1):
        a, b = sa[i], sb[i]
        na, nb_ = np.uint64(xa >= xmax[a]), np.uint64(xb >= xmax[b])
        ba[qa - 1] = xa & np.uint64(0xFFFF)
        bb[qb - 1] = xb & np.uint64(0xFFFF)
        qa -= np.int64(na)
        qb -= np.int64(nb_)
        xa = _put(xa >> (na << np.uint64(4)), a, cum, magic, sh1, sh2, cmpl)
        xb = _put(xb >> (nb_ << np.uint64(4)), b, cum, magic, sh1, sh2, cmpl)
    ba[qa - 2], ba[qa - 1] = xa >> np.uint64(16), xa & np.uint64(0xFFFF)
    bb[qb - 2], bb[qb - 1] = xb >> np.uint64(16), xb & np.uint64(0xFFFF)
    return qa - 2, qb - 2


@nb.njit(parallel=True, cache=True)
def _encode(symbols, cum, magic, sh1, sh2, cmpl, xmax, scratch, starts):  # pragma: no cover - compiled
    """Stream c codes symbols [c * CHUNK, (c + 1) * CHUNK) into scratch[c * (CHUNK + 2):]; whole streams in
    pairs, the rest one at a time."""
    n = symbols.size
    pairs = (n // CHUNK) // 2
    singles = starts.size - 2 * pairs
    for task in nb.prange(pairs + singles):
        if task < pairs:
            c = 2 * task
            a, b = c * (CHUNK + 2), (c + 1) * (CHUNK + 2)
            starts[c], starts[c + 1] = _encode_two(
                symbols[c * CHUNK : c * CHUNK + CHUNK], symbols[c * CHUNK + CHUNK : c * CHUNK + 2 * CHUNK],
                cum, magic, sh1, sh2, cmpl, xmax, scratch[a : a + CHUNK + 2], scratch[b : b + CHUNK + 2])
        else:
            c = 2 * pairs + task - pairs
            stop = min(c * CHUNK + CHUNK, n)
            base = c * (CHUNK + 2)
            starts[c] = _encode_one(symbols[c * CHUNK : stop], cum, magic, sh1, sh2, cmpl, xmax,
                                    scratch[base : base + stop - c * CHUNK + 2])


@nb.njit(inline="always")
def _start(words):  # pragma: no cover - compiled; the stream's final encoder state, its first two words
    return (np.int64(words[0]) << 16) | np.int64(words[1])


@nb.njit(cache=True)
def _decode_one(words, packed, table, precision, out):  # pragma: no cover - compiled
    """Decode out.size symbols from words; False if the stream is malformed."""
    if words.size < 2:
        return False
    mask = (1 << precision) - 1
    x = _start(words)
    pos = 2
    for i in range(out.size):
        slot = x & mask
        e = packed[slot]
        out[i] = table[slot]
        x = (e >> 32) * (x >> precision) + (e & 0xFFFFFFFF)
        if x < L:
            if pos >= words.size:
                return False
            x = (x << 16) | np.int64(words[pos])
            pos += 1
    return x == L and pos == words.size


@nb.njit(inline="always")
def _take(x, words, pos, packed, table, mask, precision, out, i):  # pragma: no cover - compiled
    """One branch-free decoder step: a stream that runs out of words reads its last one again and ends past
    its end, which the caller refuses."""
    slot = x & mask
    e = packed[slot]
    out[i] = table[slot]
    x = (e >> 32) * (x >> precision) + (e & 0xFFFFFFFF)
    n = np.int64(x < L)
    x = (x << (n << 4)) | (np.int64(words[min(pos, words.size - 1)]) & -n)
    return x, pos + n


@nb.njit(cache=True)
def _decode_four(w0, w1, w2, w3, packed, table, precision, o0, o1, o2, o3):  # pragma: no cover - compiled
    """Four streams of equal length at once; False if any is malformed."""
    if min(w0.size, w1.size, w2.size, w3.size) < 2:
        return False
    mask = (1 << precision) - 1
    x0, p0 = _start(w0), 2
    x1, p1 = _start(w1), 2
    x2, p2 = _start(w2), 2
    x3, p3 = _start(w3), 2
    for i in range(o0.size):
        x0, p0 = _take(x0, w0, p0, packed, table, mask, precision, o0, i)
        x1, p1 = _take(x1, w1, p1, packed, table, mask, precision, o1, i)
        x2, p2 = _take(x2, w2, p2, packed, table, mask, precision, o2, i)
        x3, p3 = _take(x3, w3, p3, packed, table, mask, precision, o3, i)
    return (x0 == L and x1 == L and x2 == L and x3 == L
            and p0 == w0.size and p1 == w1.size and p2 == w2.size and p3 == w3.size)


@nb.njit(cache=True)
def _decode_two(w0, w1, packed, table, precision, o0, o1):  # pragma: no cover - compiled
    """Two streams of equal length at once; False if either is malformed."""
    if min(w0.size, w1.size) < 2:
        return False
    mask = (1 << precision) - 1
    x0, p0 = _start(w0), 2
    x1, p1 = _start(w1), 2
    for i in range(o0.size):
        x0, p0 = _take(x0, w0, p0, packed, table, mask, precision, o0, i)
        x1, p1 = _take(x1, w1, p1, packed, table, mask, precision, o1, i)
    return x0 == L and x1 == L and p0 == w0.size and p1 == w1.size


@nb.njit(parallel=True, cache=True)
def _decode(words, bounds, packed, table, precision, out):  # pragma: no cover - compiled
    """Whole streams four at a time, then two, the rest one at a time; False if any stream is malformed."""
    n = out.size
    whole = n // CHUNK
    quads = whole // 4
    pairs = (whole - 4 * quads) // 2
    singles = bounds.size - 1 - 4 * quads - 2 * pairs
    ok = np.ones(quads + pairs + singles, dtype=np.uint8)
    for task in nb.prange(quads + pairs + singles):
        if task < quads:
            c = 4 * task
            good = _decode_four(words[bounds[c] : bounds[c + 1]], words[bounds[c + 1] : bounds[c + 2]],
                                words[bounds[c + 2] : bounds[c + 3]], words[bounds[c + 3] : bounds[c + 4]],
                                packed, table, precision,
                                out[c * CHUNK : c * CHUNK + CHUNK], out[c * CHUNK + CHUNK : c * CHUNK + 2 * CHUNK],
                                out[c * CHUNK + 2 * CHUNK : c * CHUNK + 3 * CHUNK],
                                out[c * CHUNK + 3 * CHUNK : c * CHUNK + 4 * CHUNK])
        elif task < quads + pairs:
            c = 4 * quads + 2 * (task - quads)
            good = _decode_two(words[bounds[c] : bounds[c + 1]], words[bounds[c + 1] : bounds[c + 2]],
                               packed, table, precision,
                               out[c * CHUNK : c * CHUNK + CHUNK], out[c * CHUNK + CHUNK : c * CHUNK + 2 * CHUNK])
        else:
            c = 4 * quads + 2 * pairs + task - quads - pairs
            good = _decode_one(words[bounds[c] : bounds[c + 1]], packed, table, precision,
                               out[c * CHUNK : min(c * CHUNK + CHUNK, n)])
        if not good:
            ok[task] = 0
    return ok.min() if ok.size else 1


def _cum(freq: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(freq)[:-1]]).astype(np.int64)


def _encoder_tables(freq: np.ndarray, precision: int) -> tuple[np.ndarray, ...]:
    """Per symbol: cum, the division's magic number and two shifts, 2^precision - f, and the state from which
    a word must go first (f << (32 - precision)); all uint64. Symbols of frequency 0 never occur."""
    f = freq.astype(np.int64)
    cum = _cum(freq)
    ell = np.frexp(np.maximum(f - 1, 0).astype(np.float64))[1].astype(np.int64)  # ceil(log2 f), exact
    magic = np.where(f > 0, ((np.int64(1) << 32) * ((np.int64(1) << ell) - f)) // np.maximum(f, 1) + 1, 0)
    return tuple(a.astype(np.uint64) for a in (cum, magic, np.minimum(ell, 1), np.maximum(ell - 1, 0),
                                               (1 << precision) - f, f << (32 - precision)))


def _decoder_table(freq: np.ndarray, precision: int) -> tuple[np.ndarray, np.ndarray]:
    """slot -> symbol, and slot -> freq << 32 | (slot - cum): one load gives the whole state update."""
    cum, table = _cum(freq), np.repeat(np.arange(freq.size, dtype=np.uint16), freq)
    s = table.astype(np.int64)
    packed = (freq.astype(np.int64)[s] << 32) | (np.arange(1 << precision, dtype=np.int64) - cum[s])
    return packed, table


def encode(symbols: np.ndarray, freq: np.ndarray, precision: int) -> tuple[np.ndarray, np.ndarray]:
    """(words per stream as uint64, concatenated uint16 streams) for uint16 symbols with freq[s] > 0."""
    nchunks = -(-symbols.size // CHUNK)
    scratch = np.empty(nchunks * (CHUNK + 2), dtype=np.uint16)
    starts = np.empty(nchunks, dtype=np.int64)
    cum, magic, sh1, sh2, cmpl, xmax = _encoder_tables(freq, precision)
    _encode(symbols, cum, magic, sh1, sh2, cmpl, xmax, scratch, starts)
    ends = np.minimum(np.arange(1, nchunks + 1) * CHUNK, symbols.size) - np.arange(nchunks) * CHUNK + 2
    sizes = (ends - starts).astype(np.uint64)
    base = np.arange(nchunks, dtype=np.int64) * (CHUNK + 2)
    pieces = [scratch[b + s : b + e] for b, s, e in zip(base, starts, ends, strict=True)]
    return sizes, np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)


def decode(values: memoryview, sizes: np.ndarray, freq: np.ndarray, precision: int, n: int) -> np.ndarray:
    """Inverse of `encode`: n uint16 symbols; every stream must end in the initial state, fully read."""
    if sizes.size != -(-n // CHUNK) or values.nbytes % 2 or values.nbytes // 2 != int(sizes.sum()):
        raise CodecError("ANS streams do not match their length table")
    if int(freq.sum()) != 1 << precision or precision > MAX_PRECISION:
        raise CodecError(f"ANS frequencies sum to {int(freq.sum())}, not 2^{precision}")
    packed, table = _decoder_table(freq, precision)
    bounds = np.concatenate([[0], np.cumsum(sizes.astype(np.int64))])
    out = np.empty(n, dtype=np.uint16)
    if n and not _decode(np.frombuffer(values, dtype=np.uint16), bounds, packed, table, precision, out):
        raise CodecError("ANS stream is corrupt: it does not decode to its symbol count and initial state")
    return out
