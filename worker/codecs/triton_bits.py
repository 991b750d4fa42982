"""Triton bit-packing: b-bit symbols (1..16) in bitpack.py's LSB-first layout, written and read as bytes.

Value i holds bits i*b .. i*b + b - 1 of the stream. A writer computes each output byte on its own,
OR-ing in the (at most 8) values whose bits reach it; a reader takes each value from the one to three
bytes its bits span. Neither moves values between threads (no groups, reshapes or 64-bit words: the
kernels are bound by instruction issue, see benchmarks/triton_sass.py), and every store is a plain
byte store, so payload sections start at any byte offset. Under TRITON_INTERPRET=1 the same kernels
run on CPU tensors, with larger tiles (the interpreter pays per program).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
TILE = 1024  # values per program of the element-wise kernels on a GPU


def tile(count: int) -> int:
    """Values per program: TILE, or under the interpreter (which pays ~0.1 s a program) up to 64K."""
    return min(1 << 16, max(TILE, triton.next_power_of_2(count))) if INTERPRET else TILE
OPTIONS = {} if INTERPRET else {"enable_fp_fusion": False}  # no FMA contraction: the CPU path's rounding


def contributors(bits: int) -> int:
    """Most values whose bits reach into one byte of a `bits`-bit stream: 8/bits when values tile bytes
    (bits 1, 2, 4, 8, 16), one more where a value can straddle the byte's edges."""
    return -(-8 // bits) + (0 if 8 % bits == 0 or bits % 8 == 0 else 1)


def pack_constants(bits: int, values: int = TILE) -> dict:
    """The packing kernels' constexprs for `values` (a multiple of 8) per program."""
    return {"BITS": bits, "N": values, "NB2": triton.next_power_of_2(values * bits // 8), "K": contributors(bits)}


@triton.jit
def place(q, at):
    """q's contribution to a byte whose first bit lies `at` bits before q's first bit: q << at, or q >> -at.
    Callers mask out the `at` that miss the byte; the shift amounts are clamped to 0..31 all the same, as a
    shift by 32 or more is poison to the GPU compiler."""
    return tl.where(at >= 0, q << tl.minimum(tl.maximum(at, 0), 31), q >> tl.minimum(tl.maximum(-at, 0), 31))


@triton.jit
def read_values(in_ptr, i, valid, nbytes, BITS: tl.constexpr):
    """The values at int32 positions i of a BITS-bit LSB-first stream (value i is bits i*BITS..): each
    from the one to three bytes its bits span, read directly; neighbours share bytes, which the cache serves.
    Bytes at or past `nbytes` read as 0."""
    SPAN: tl.constexpr = 1 if 8 % BITS == 0 else (BITS // 8 if BITS % 8 == 0 else (BITS + 14) // 8)
    first = (i >> 3) * BITS + (((i & 7) * BITS) >> 3)  # the byte holding bit i*BITS, without forming i*BITS
    shift = ((i & 7) * BITS) & 7
    w = tl.zeros_like(shift)
    for j in tl.static_range(SPAN):
        use = valid & (first + j < nbytes) & (8 * j < shift + BITS)
        w |= tl.load(in_ptr + first + j, mask=use, other=0).to(tl.int32) << (8 * j)
    return (w >> shift) & ((1 << BITS) - 1)


@triton.jit
def output_bytes(N: tl.constexpr, BITS: tl.constexpr, NB2: tl.constexpr):
    """(o, lane in use): this program's byte positions, the N * BITS / 8 bytes of its N values, in NB2 lanes."""
    NBYTES: tl.constexpr = N * BITS // 8
    b = tl.arange(0, NB2)
    return tl.program_id(0) * NBYTES + b, b < NBYTES


@triton.jit
def reaching(o, k, lanes, count, BITS: tl.constexpr):
    """(i, at, use) of the k-th value whose bits may reach byte o: its position, where its bits start
    relative to the byte's (for place), and whether it is real and reaches the byte at all."""
    i = (8 * o) // BITS + k
    at = i * BITS - 8 * o
    return i, at, lanes & (i < count) & (at < 8)


@triton.jit
def store_bytes(out_ptr, o, lanes, nbytes, acc):
    tl.store(out_ptr + o, (acc & 0xFF).to(tl.uint8), mask=lanes & (o < nbytes))


@triton.jit
def _pack_kernel(sym_ptr, count, out_ptr, nbytes, BITS: tl.constexpr, N: tl.constexpr, NB2: tl.constexpr,
                 K: tl.constexpr):
    """Each program writes the N * BITS / 8 bytes of N symbols: byte o ORs in the K values reaching it."""
    o, lanes = output_bytes(N, BITS, NB2)
    acc = tl.zeros((NB2,), tl.int32)
    for k in tl.static_range(K):
        i, at, use = reaching(o, k, lanes, count, BITS)
        acc |= tl.where(use, place(tl.load(sym_ptr + i, mask=use, other=0).to(tl.int32), at), 0)
    store_bytes(out_ptr, o, lanes, nbytes, acc)


@triton.jit
def _unpack_kernel(in_ptr, nbytes, count, out_ptr, BITS: tl.constexpr, N: tl.constexpr):
    offs = tl.program_id(0) * N + tl.arange(0, N)
    valid = offs < count
    tl.store(out_ptr + offs, read_values(in_ptr, offs, valid, nbytes, BITS).to(tl.int64), mask=valid)


def packed_bytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack(symbols: torch.Tensor, bits: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Integer symbols (< 2^bits) -> ceil(n*bits/8) uint8 on their device, written into `out` if given."""
    count = symbols.numel()
    nbytes = packed_bytes(count, bits)
    out = torch.empty(nbytes, dtype=torch.uint8, device=symbols.device) if out is None else out
    if count:
        n = tile(count)
        _pack_kernel[(triton.cdiv(count, n),)](symbols.reshape(-1), count, out, nbytes, **pack_constants(bits, n))
    return out


def unpack(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of `pack`: int64 symbols on packed's device."""
    out = torch.empty(count, dtype=torch.int64, device=packed.device)
    if count:
        n = tile(count)
        _unpack_kernel[(triton.cdiv(count, n),)](packed, packed.numel(), count, out, BITS=bits, N=n)
    return out
