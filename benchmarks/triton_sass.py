"""Instructions per value of the triton codec kernels, compiled for an H100/H200 (sm_90) on this CPU.

The kernels are straight-line code, so the SASS a warp runs is the SASS of the kernel: warp
instructions per value = SASS count x warps / values per program. On a GPU they are bound by
instruction issue, not by memory (an H200 issues ~1.05e12 warp instructions a second: 4 per SM and
clock, 132 SMs, 1.98 GHz; at 4 warp instructions a value that is ~1 TB/s of fp32 input, under the 4.8
TB/s of HBM), so the count is the figure this machine can measure; GB/s needs the GPU
(benchmarks/gpu_triton_check.py). Triton's compiler, LLVM, ptxas and nvdisasm come with the triton
wheel; no driver is needed. Alignment is specialised as a launch on 64M values would: tensors and
sizes divisible by 16, payload sections (which start at any byte) not.

    python -m benchmarks.triton_sass                  # the table
    python -m benchmarks.triton_sass --compile-only   # every configuration compiles (tests run this)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("triton_sass needs the compiler: run it without TRITON_INTERPRET=1")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, compile  # noqa: E402

from worker.codecs import device_wire, triton_bits, triton_quantize, triton_topk  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
OPTIONS = {"enable_fp_fusion": False}  # triton_bits.OPTIONS off the interpreter
ISSUE_PER_S = 4 * 132 * 1.98e9  # H200 warp instructions a second
NVDISASM = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")


def configurations():
    """(name, kernel, {argument: type}, aligned arguments, constexprs, values per program): what the
    codecs launch on a GPU (triton_quantize.launch_constants gives the per-width constants)."""
    tile = triton_bits.TILE
    block = {"x_ptr": "*fp32", "count": "i32", "block": "i32", "ngroups": "i32", "seed": "i64", "scales_ptr": "*u8",
             "out_ptr": "*u8", "nbytes": "i32", "sym_ptr": "*i32", "bad_ptr": "*i32"}
    block_aligned = ["x_ptr", "count", "block", "ngroups", "nbytes", "sym_ptr", "bad_ptr"]
    rows = tile // 64
    for bits in (1, 3, 4, 7, 8, 11, 16):
        yield (f"encode block64 b{bits}", triton_quantize._block_kernel, block, block_aligned,
               {**triton_quantize.block_constants(bits, 64, packed=True), "STOCHASTIC": False}, rows * 64)
    yield ("encode block64 b4 stochastic", triton_quantize._block_kernel, block, block_aligned,
           {**triton_quantize.block_constants(4, 64, packed=True), "STOCHASTIC": True}, rows * 64)
    yield ("encode block64 b8 symbols", triton_quantize._block_kernel, block, block_aligned,
           {**triton_quantize.block_constants(8, 64, packed=False), "STOCHASTIC": False}, rows * 64)
    dequant = {"values_ptr": "*u8", "nbytes": "i32", "scales_ptr": "*u8", "ngroups": "i32", "block": "i32",
               "pos_ptr": "*i64", "count": "i32", "out_ptr": "*fp32"}
    for bits, scatter in ((1, False), (3, False), (4, False), (4, True), (7, False), (8, False), (11, False), (16, False)):
        yield (f"decode block64 b{bits}" + (" scatter" if scatter else ""), triton_quantize._block_dequant_kernel, dequant,
               ["nbytes", "ngroups", "block", "pos_ptr", "count", "out_ptr"],
               {"BITS": bits, "BP2": 64, "ROWS": rows, "SCATTER": scatter}, rows * 64)
    quant = {"x_ptr": "*fp32", "pos_ptr": "*i64", "count": "i32", "inner": "i32", "ngroups": "i32", "lo_ptr": "*fp64",
             "inv_ptr": "*fp64", "seed": "i64", "out_ptr": "*u8", "nbytes": "i32", "sym_ptr": "*i32"}
    for bits, by_pos, packed, one in ((4, False, True, True), (4, False, True, False), (4, True, True, False),
                                      (8, False, False, False)):
        consts = triton_quantize.flat_constants(bits, packed)
        yield (f"encode {'tensor' if one else 'channel'} b{bits}" + (" by position" if by_pos else "")
               + ("" if packed else " symbols"), triton_quantize._quant_kernel, quant,
               ["x_ptr", "pos_ptr", "count", "lo_ptr", "inv_ptr", "sym_ptr"],
               {**consts, "BY_POS": by_pos, "STOCHASTIC": False, "ONE_GROUP": one}, consts["N"])
    flat = {"values_ptr": "*u8", "nbytes": "i32", "sym_ptr": "*i32", "scales_ptr": "*u8", "lo_ptr": "*fp64",
            "step_ptr": "*fp64", "ngroups": "i32", "inner": "i32", "pos_ptr": "*i64", "count": "i32", "out_ptr": "*fp32"}
    for bits, packed, by_pos, scatter, one in ((4, True, False, False, True), (4, True, False, False, False),
                                               (4, True, True, True, False), (8, False, False, False, False)):
        yield (f"decode {'tensor' if one else 'channel'} b{bits}" + (" by position, scatter" if scatter else "")
               + ("" if packed else " symbols"), triton_quantize._dequant_kernel, flat,
               ["nbytes", "count", "pos_ptr", "out_ptr", "sym_ptr", "lo_ptr", "step_ptr"],
               {"BITS": bits, "PACKED": packed, "BY_POS": by_pos, "SCATTER": scatter, "N": tile, "ONE_GROUP": one}, tile)
    yield ("top-k keys", triton_topk._keys_kernel,
           {"x_ptr": "*fp32", "n": "i32", "per": "i32", "bracket_ptr": "*fp64", "keys_ptr": "*i16", "counts_ptr": "*i32",
            "hist_ptr": "*i32"},
           ["x_ptr", "n", "bracket_ptr", "keys_ptr", "counts_ptr"], {"NBINS": 4096, "N": tile}, tile)
    for sym, bits in (("*u8", 1), ("*i64", 5)):
        consts = triton_bits.pack_constants(bits)
        yield (f"pack {sym[1:]} b{bits}", triton_bits._pack_kernel, {"sym_ptr": sym, "count": "i32", "out_ptr": "*u8",
               "nbytes": "i32"}, ["sym_ptr", "count"], consts, consts["N"])
    yield ("unpack b5", triton_bits._unpack_kernel, {"in_ptr": "*u8", "nbytes": "i32", "count": "i32", "out_ptr": "*i64"},
           ["count", "out_ptr"], {"BITS": 5, "N": tile}, tile)
    yield ("words checksum (per 4 bytes)", device_wire._words_kernel, {"data_ptr": "*u8", "nbytes": "i32", "acc_ptr": "*i64"},
           ["data_ptr", "acc_ptr"], {"WORD_STEP": device_wire.wire.WORD_STEP, "N": tile, "ALIGNED": True}, tile)


def build(kernel, args: dict, aligned: list[str], constexprs: dict):
    signature = {**args, **dict.fromkeys(constexprs, "constexpr")}
    attrs = {(kernel.arg_names.index(a),): [["tt.divisibility", 16]] for a in aligned}
    return compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs), target=TARGET,
                   options=OPTIONS)


def sass_ops(compiled) -> Counter:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        text = subprocess.run([NVDISASM, "-c", f.name], capture_output=True, text=True, check=True).stdout
    ops: Counter = Counter()
    for line in text.splitlines():
        m = re.match(r"\s+/\*[0-9a-f]{4,}\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_]+)", line)
        if m:
            ops[m.group(2)] += 1
    return ops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile-only", action="store_true", help="compile every configuration, print ok/FAILED")
    args = parser.parse_args(argv)
    failed = 0
    if not args.compile_only:
        print(f"triton {triton.__version__}, sm_90; issue-bound GB/s = 4 bytes x {ISSUE_PER_S:.3g} warp instructions/s "
              "/ warp instructions per value")
        print(f"{'kernel':40} {'SASS':>6} {'warps':>5} {'values':>6} {'w-instr/value':>13} {'bound GB/s':>10}  top ops")
    for name, kernel, types, aligned, constexprs, values in configurations():
        started = time.perf_counter()
        try:
            compiled = build(kernel, types, aligned, constexprs)
        except Exception as e:  # noqa: BLE001 - every failure is listed; the exit status says so
            failed += 1
            print(f"FAILED {name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        if args.compile_only:
            print(f"ok {name} ({time.perf_counter() - started:.1f} s)")
            continue
        ops = sass_ops(compiled)
        count, warps = sum(ops.values()), compiled.metadata.num_warps
        per_value = count * warps / values
        top = ", ".join(f"{op} {n}" for op, n in ops.most_common(4))
        print(f"{name:40} {count:6} {warps:5} {values:6} {per_value:13.2f} {4 * ISSUE_PER_S / per_value / 1e9:10.0f}  {top}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
