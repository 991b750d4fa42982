"""Triton bit-packing: b-bit symbols (1..16) in bitpack.py's LSB-first layout, written and read as bytes.

Eight consecutive values fill exactly b bytes, so a group of eight is one 128-bit number (two
uint64 halves) whose bytes land at group * b; groups pack and unpack independently and every
store is a plain byte store (payload sections start at any byte offset). Under TRITON_INTERPRET=1
the same kernels run on CPU tensors, with larger tiles (the interpreter pays per program).
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


@triton.jit
def store_groups(q, gidx, gvalid, out_ptr, nbytes, BITS: tl.constexpr):
    """Pack q (G, 8) uint64 symbols, group g being values 8*gidx[g]..+8 of the stream, into bytes
    out[gidx*BITS : gidx*BITS + BITS]; bytes at or past `nbytes` and invalid groups are not written."""
    at = (tl.arange(0, 8) * BITS)[None, :]
    lo = tl.sum(tl.where(at < 64, q << (at % 64).to(tl.uint64), 0), axis=1)
    spill = tl.where(at + BITS > 64, q >> ((64 - at) % 64).to(tl.uint64), 0)
    hi = tl.sum(tl.where(at >= 64, q << ((at - 64) % 64).to(tl.uint64), tl.where(at < 64, spill, 0)), axis=1)
    m = tl.arange(0, 16)[None, :]
    byte = tl.where(m < 8, lo[:, None] >> ((8 * m) % 64).to(tl.uint64), hi[:, None] >> ((8 * m - 64) % 64).to(tl.uint64))
    where = gidx[:, None] * BITS + m
    tl.store(out_ptr + where, (byte & 0xFF).to(tl.uint8), mask=gvalid[:, None] & (m < BITS) & (where < nbytes))


@triton.jit
def load_groups(in_ptr, gidx, gvalid, nbytes, BITS: tl.constexpr):
    """Inverse of store_groups: (G, 8) int64 symbols of groups gidx (zeros past `nbytes`)."""
    m = tl.arange(0, 16)[None, :]
    where = gidx[:, None] * BITS + m
    byte = tl.load(in_ptr + where, mask=gvalid[:, None] & (m < BITS) & (where < nbytes), other=0).to(tl.uint64)
    lo = tl.sum(tl.where(m < 8, byte << ((8 * m) % 64).to(tl.uint64), 0), axis=1)[:, None]
    hi = tl.sum(tl.where(m >= 8, byte << ((8 * m - 64) % 64).to(tl.uint64), 0), axis=1)[:, None]
    at = (tl.arange(0, 8) * BITS)[None, :]
    low_part = (lo >> (at % 64).to(tl.uint64)) | tl.where(at + BITS > 64, hi << ((64 - at) % 64).to(tl.uint64), 0)
    v = tl.where(at < 64, low_part, hi >> ((at - 64) % 64).to(tl.uint64))
    return (v & ((1 << BITS) - 1)).to(tl.int64)


@triton.jit
def _pack_kernel(sym_ptr, count, out_ptr, nbytes, BITS: tl.constexpr, N: tl.constexpr):
    g0 = tl.program_id(0) * (N // 8)
    offs = g0 * 8 + tl.arange(0, N)
    q = tl.load(sym_ptr + offs, mask=offs < count, other=0).to(tl.uint64)
    gidx = g0 + tl.arange(0, N // 8)
    store_groups(tl.reshape(q, (N // 8, 8)), gidx, gidx * 8 < count, out_ptr, nbytes, BITS)


@triton.jit
def _unpack_kernel(in_ptr, nbytes, count, out_ptr, BITS: tl.constexpr, N: tl.constexpr):
    g0 = tl.program_id(0) * (N // 8)
    gidx = g0 + tl.arange(0, N // 8)
    q = tl.reshape(load_groups(in_ptr, gidx, gidx * 8 < count, nbytes, BITS), (N,))
    offs = g0 * 8 + tl.arange(0, N)
    tl.store(out_ptr + offs, q, mask=offs < count)


def packed_bytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack(symbols: torch.Tensor, bits: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Integer symbols (< 2^bits) -> ceil(n*bits/8) uint8 on their device, written into `out` if given."""
    count = symbols.numel()
    nbytes = packed_bytes(count, bits)
    out = torch.empty(nbytes, dtype=torch.uint8, device=symbols.device) if out is None else out
    if count:
        n = tile(count)
        _pack_kernel[(triton.cdiv(count, n),)](symbols.reshape(-1), count, out, nbytes, BITS=bits, N=n)
    return out


def unpack(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of `pack`: int64 symbols on packed's device."""
    out = torch.empty(count, dtype=torch.int64, device=packed.device)
    if count:
        n = tile(count)
        _unpack_kernel[(triton.cdiv(count, n),)](packed, packed.numel(), count, out, BITS=bits, N=n)
    return out
