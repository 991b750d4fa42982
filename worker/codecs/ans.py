"""rANS over quantized symbols (constriction), cut into chunks that code on parallel threads.

The model is the symbol counts (sent zlib-compressed by entropy.py); every chunk of CHUNK
symbols is its own ANS stream, and the model section lists each stream's length in words.
constriction releases the GIL, so the chunks use all cores.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

from worker.codecs.wire import CodecError

CHUNK = 1 << 20


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="slimpipe-ans")


def _model(counts: np.ndarray):
    import constriction

    probabilities = counts.astype(np.float64) / max(int(counts.sum()), 1)
    return constriction.stream.model.Categorical(probabilities, perfect=False)


def _map(fn, items: list) -> list:
    return list(_pool().map(fn, items)) if len(items) > 1 else [fn(item) for item in items]


def encode(symbols: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(words per chunk as uint64, concatenated uint32 streams) for symbols < counts.size."""
    import constriction

    model = _model(counts)

    def one(chunk: np.ndarray) -> np.ndarray:
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(chunk.astype(np.int32), model)
        return coder.get_compressed()

    streams = _map(one, [symbols[i : i + CHUNK] for i in range(0, symbols.size, CHUNK)])
    sizes = np.array([s.size for s in streams], dtype=np.uint64)
    return sizes, np.concatenate(streams) if streams else np.zeros(0, dtype=np.uint32)


def decode(values: memoryview, sizes: np.ndarray, counts: np.ndarray, n: int) -> np.ndarray:
    """Inverse of `encode`: n uint16 symbols; every stream must end exactly where its symbols do."""
    import constriction

    if values.nbytes % 4 or values.nbytes // 4 != int(sizes.sum()) or sizes.size != -(-n // CHUNK):
        raise CodecError("ANS streams do not match their length table")
    words = np.frombuffer(values, dtype=np.uint32)
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    model = _model(counts)

    def one(c: int) -> np.ndarray:
        count = min(CHUNK, n - c * CHUNK)
        try:
            coder = constriction.stream.stack.AnsCoder(words[bounds[c] : bounds[c + 1]].copy())
            symbols = coder.decode(model, count)
        except Exception as exc:  # constriction raises its own error types on malformed streams
            raise CodecError(f"ANS stream is corrupt: {exc}") from None
        if not coder.is_empty() or symbols.size != count or (count and int(symbols.max()) >= counts.size):
            raise CodecError("ANS stream does not decode to its symbol count within the model")
        return symbols.astype(np.uint16)

    parts = _map(one, list(range(sizes.size)))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)
