"""A short (< 3 min on an H200) check of the triton codec backend: every block width and top-k 0.1 + 4-bit
round trips on 64M fp32 values (GB/s, share of HBM bandwidth, bytes identical to the numba CPU path),
same-run baselines, and the MobileNetV2 5-stage / 4-micro-batch in-process step, dense vs top-k 0.1 + 4-bit.

    python -m benchmarks.gpu_triton_check                     # on a GPU machine; JSON to $OUT if set
    TRITON_INTERPRET=1 python -m benchmarks.gpu_triton_check --device cpu --elements 65536 \\
        --widths 1,4 --repeats 1 --model tiny_cnn --batch 16 --steps 1   # dry run anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from typing import Any

import torch


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn, repeats: int) -> tuple[float, Any]:
    out = fn()  # warm: Triton compiles each kernel once per width
    _sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _row(name: str, n: int, t_enc: float, t_dec: float, nbytes: int, err: float, peak: float, check: str) -> dict:
    gb = 4 * n / 1e9
    traffic = (8 * n + 2 * nbytes) / 1e9  # fp32 read + payload written, payload read + fp32 written
    return {"config": name, "bits_per_element": 8 * nbytes / n, "rel_l2": err, "encode_gbps": gb / t_enc,
            "decode_gbps": gb / t_dec, "round_trip_gbps": gb / (t_enc + t_dec),
            "hbm_percent": 100 * traffic / (t_enc + t_dec) / peak, "check": check}


def _rel(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x.double() - y.double().reshape(x.shape)).norm() / x.double().norm())


def codec_rows(x: torch.Tensor, widths: list[int], cpu_check: set[str], repeats: int, peak: float) -> list[dict]:
    from slimpipe.spec import CompressionSpec
    from worker.codecs import CodecError, decode, make_codec, wire

    configs = [(f"b{b} block64", {"bits": b}) for b in widths] + [("top0.1 b4", {"topk": 0.1, "bits": 4})]
    x_cpu = x.cpu()
    rows = []
    for name, fields in configs:
        spec = CompressionSpec(**fields)
        codec = make_codec(spec, backend="triton")
        t_enc, payload = _timed(lambda c=codec: c.encode(x, device_payload=True), repeats)
        t_dec, y = _timed(lambda p=payload: decode(p), repeats)
        check = "-"
        if name in cpu_check or name.split()[0] in cpu_check:  # bytes on the host == the numba backend's
            same = make_codec(spec, backend="triton").encode(x) == make_codec(spec, backend="numba").encode(x_cpu)
            try:
                wire.unpack(bytes(payload.cpu().numpy()))  # numpy recomputes the device's "words" checksum
            except CodecError:
                same = False
            check = "bytes = cpu" if same else "MISMATCH"
        rows.append(_row(name, x.numel(), t_enc, t_dec, payload.numel(), _rel(x, y), peak, check))
    flat = x.reshape(-1)
    t_enc, h = _timed(lambda: flat.half(), repeats)
    t_dec, y = _timed(lambda: h.float(), repeats)
    rows.append(_row("base fp16 cast", x.numel(), t_enc, t_dec, 2 * h.numel(), _rel(x, y), peak, "-"))
    lo, hi = flat.min().item(), flat.max().item()
    scale = (hi - lo) / 255
    with warnings.catch_warnings():  # deprecated in torch, but it is the baseline the issue names
        warnings.simplefilter("ignore", UserWarning)
        t_enc, q = _timed(lambda: torch.quantize_per_tensor(flat, scale, int(round(-lo / scale)) - 128, torch.qint8),
                          repeats)
        t_dec, y = _timed(lambda: q.dequantize(), repeats)
    rows.append(_row("base torch int8", x.numel(), t_enc, t_dec, q.numel(), _rel(x, y), peak, "-"))
    k = flat.numel() // 10
    t_enc, pair = _timed(lambda: (lambda i: (flat[i], i))(torch.topk(flat.abs(), k, sorted=False).indices), repeats)
    t_dec, y = _timed(lambda: torch.zeros_like(flat).scatter_(0, pair[1], pair[0]), repeats)
    rows.append(_row("base torch.topk 0.1", x.numel(), t_enc, t_dec, 12 * k, _rel(x, y), peak, "-"))
    return rows


def step_rows(device: str, batch: int, steps: int, model: str) -> list[dict]:
    from benchmarks.gpu_engine_check import CONFIGS, spec, time_config

    rows = []
    for name in ("dense fp32", "topk 0.1 + 4-bit"):
        result = time_config(spec(device, batch, CONFIGS[name], "gpipe", "fp32", model), steps)
        rows.append({"config": f"gpipe {name}", "ms_per_batch": result["ms_per_batch"], "ratio": result["ratio"],
                     "err_fwd": result["err_fwd"]})
    rows[1]["vs_dense"] = rows[1]["ms_per_batch"] / rows[0]["ms_per_batch"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, or cpu (with TRITON_INTERPRET=1) for a dry run")
    parser.add_argument("--elements", type=int, default=64 << 20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--widths", default=",".join(str(b) for b in range(1, 17)))
    parser.add_argument("--cpu-check", default="b3,b4,top0.1",
                        help="configs whose bytes are compared with the numba CPU path (every width is compared "
                             "in tests/worker/codecs/test_triton.py; here 64M values cost ~1 s each + numba's compile)")
    parser.add_argument("--peak-gbps", type=float, default=4800.0, help="HBM bandwidth (H200: 4800 GB/s)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model", default="mobilenetv2_cifar", help="tiny_cnn for a quick CPU dry run")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible (for a dry run: TRITON_INTERPRET=1 ... --device cpu)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    where = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (triton interpreter dry run)"
    x = torch.randn(args.elements // 4096 or 1, min(4096, args.elements), generator=torch.Generator().manual_seed(0))
    x[:, ::97] *= 40.0  # a few outlier channels
    x = x.to(args.device)
    print(f"{where}, torch {torch.__version__}: {x.numel():,} fp32 values, median of {args.repeats}; "
          f"GB/s of fp32 input; HBM % = (8n + 2*payload bytes) / time / {args.peak_gbps:.0f} GB/s")
    rows = codec_rows(x, [int(b) for b in args.widths.split(",") if b], set(args.cpu_check.split(",")), args.repeats,
                      args.peak_gbps)
    print(f"{'config':20} {'bits/el':>8} {'rel L2':>8} {'enc GB/s':>9} {'dec GB/s':>9} {'rt GB/s':>9} {'HBM %':>6}  check")
    for r in rows:
        print(f"{r['config']:20} {r['bits_per_element']:8.3f} {r['rel_l2']:8.4f} {r['encode_gbps']:9.1f} "
              f"{r['decode_gbps']:9.1f} {r['round_trip_gbps']:9.1f} {r['hbm_percent']:6.1f}  {r['check']}")
    del x
    steps = step_rows(args.device, args.batch, args.steps, args.model)
    print(f"{args.model}, its default stages (MobileNetV2: 5), gpipe, 4 micro-batches, batch {args.batch}, in-process, "
          "codecs on the auto backend (triton on a GPU)")
    for r in steps:
        extra = f"  {r['vs_dense']:.2f}x dense" if "vs_dense" in r else ""
        print(f"{r['config']:28} {r['ms_per_batch']:8.1f} ms/batch  ratio {r['ratio']:6.2f}  err_fwd {r['err_fwd']:.3f}{extra}")
    mismatches = sum(r["check"] == "MISMATCH" for r in rows)
    print(f"total {time.perf_counter() - started:.1f} s; " + ("all checked payloads match the CPU bytes" if not mismatches
                                                             else f"{mismatches} configs MISMATCH the CPU bytes"))
    result = {"device": where, "elements": args.elements, "codecs": rows, "step": steps}
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_triton_check.json"), "w") as f:
            json.dump(result, f, indent=1)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
