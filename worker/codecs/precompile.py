"""Compile the numba codec kernels into numba's on-disk cache: `python -m worker.codecs.precompile`.

A process compiles the kernels a run's compression needs at its first step: 24 s of CPU for the
`extreme` preset on a 2-core VM, paid again by every stage process of a distributed run, all at
once. `make venv` and the Docker image run this once, so runs and tests load the kernels instead
(about 0.1 s). It round-trips a small tensor through every path of the CPU chain: each width 1-16
under each scale mode, with and without top-k, both roundings, both entropy coders, fixed steps and
rate control, random top-k, raw fp32/fp16/bf16 values, position bitmaps and complements, ReLU zeros
and sample keys.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator

import numpy as np
import torch

from slimpipe.spec import CompressionSpec


def grid() -> Iterator[CompressionSpec]:
    """Every combination of the options that picks a different compiled kernel or specialization."""
    for bits in range(1, 17):
        for scale, block in (("tensor", 64), ("channel", 64), ("block", 64), ("block", 96)):
            for topk in (None, 0.25):
                for rounding in ("nearest", "stochastic"):
                    yield CompressionSpec(topk=topk, bits=bits, scale=scale, block=block, rounding=rounding)
        for entropy in ("huffman", "ans"):
            yield CompressionSpec(bits=bits, scale="channel", entropy=entropy)
            yield CompressionSpec(topk=0.25, bits=bits, scale="block", block=128, entropy=entropy)
    for topk in (None, 0.25):
        for dtype in ("fp32", "fp16", "bf16"):
            yield CompressionSpec(topk=topk, dtype=dtype)
        yield CompressionSpec(topk=topk, bits=8, scale="tensor", step_std=0.5, entropy="ans")
        yield CompressionSpec(topk=topk, bits=8, scale="tensor", rate=1.5, entropy="ans")
    yield CompressionSpec(topk=0.95)  # the dropped positions coded, found by the run-filling kernel
    yield CompressionSpec(topk=0.25, topk_mode="random", bits=4)
    yield CompressionSpec(topk=0.25, topk_mode="random")


def precompile(shape: tuple[int, ...] = (4, 8, 6, 6)) -> int:
    """Round-trip a tensor of `shape` through every spec of the grid on the numba backend; the count."""
    from worker.codecs import chain, indexset

    rng = np.random.default_rng(0)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    keys = torch.arange(shape[0])
    count = 0
    for spec in grid():
        payload = chain.encode(x, spec, backend="numba", rng=rng, keys=keys)
        chain.decode(payload, backend="numba")
        count += 1
    chain.decode(chain.encode(x, CompressionSpec(), backend="numba", rng=rng, dense=True), backend="numba")
    relu = x.clamp(min=0)  # ReLU outputs: the exact top-k leaves the repeated zero out of its partition
    chain.decode(chain.encode(relu, CompressionSpec(topk=0.25), backend="numba", rng=rng), backend="numba")
    half = np.flatnonzero(np.random.default_rng(0).random(x.numel()) < 0.5)  # a bitmap codes these smallest
    indexset.decode(memoryview(indexset.encode(half, x.numel())), x.numel(), half.size)
    return count + 3


def compiled_here() -> int:
    """Kernel signatures this process compiled rather than loaded from numba's cache."""
    import numba.core.dispatcher

    from worker.codecs import ans, bitpack, entropy, fused, indexset, topk

    total = 0
    for module in (ans, bitpack, entropy, fused, indexset, topk):
        for value in vars(module).values():
            if isinstance(value, numba.core.dispatcher.Dispatcher) and getattr(value, "_cache", None) is not None:
                total += sum(value.stats.cache_misses.values())
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.codecs.precompile", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    start = time.process_time()
    count = precompile()
    compiled = compiled_here()
    print(f"numba codec kernels: {count} round trips, {compiled} signatures compiled into the cache "
          f"(0: all were cached already), {time.process_time() - start:.1f} s of CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
