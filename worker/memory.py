"""Process-wide malloc policy for the processes that train and encode: keep freed memory for reuse.

glibc serves every block of 32 MB or more with its own mmap and unmaps it on free, so the next
tensor of that size page-faults its memory back in. On the 2-core VM this project is measured on,
a fresh 64 MB `torch.empty(16M).fill_()` takes 33 ms where a reused one takes 4.4 ms: the faults
alone capped a 16M-element codec round trip near 1 GB/s. With mmap off and trimming off, freed
blocks stay in the heap and are handed out again; the price is that the process keeps its peak
heap resident, as PyTorch's CUDA caching allocator does and as the CPU tuning guides get from
jemalloc/tcmalloc. Entry points opt in (the training child, `slimpipe train`, the codec bench);
library code never calls this.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Callable, Iterator

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
_applied = False


def _mallopt() -> Callable[[int, int], int] | None:
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: no mallopt, nothing to do
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def keep_freed_memory() -> bool:
    """Turn off glibc's per-block mmap and heap trimming in this process; False where libc is not glibc."""
    global _applied
    if _applied:
        return True
    if (mallopt := _mallopt()) is None:
        return False
    _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied


@contextlib.contextmanager
def blocks_of_their_own(threshold: int = 1 << 20) -> Iterator[None]:
    """Inside: every block of `threshold` bytes or more gets its own mmap again, so freeing it later gives
    it back to the system rather than leaving a hole in the kept heap. Rank 0 of a distributed run builds
    the whole model this way: it sends the other stages' weights and frees them; in the kept heap their
    holes stayed resident and too fragmented for the steps' tensors to reuse (+600 MB of RSS for a
    RoBERTa-base-sized model). Blocks made after the context are kept again."""
    mallopt = _mallopt() if _applied else None
    if mallopt is None:
        yield
        return
    mallopt(M_MMAP_THRESHOLD, threshold)
    mallopt(M_MMAP_MAX, 65536)
    try:
        yield
    finally:
        mallopt(M_MMAP_MAX, 0)
