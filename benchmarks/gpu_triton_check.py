"""A short (< 3 min on an H200) check of the triton codec backend: every block width and top-k 0.1 + 4-bit
round trips on 64M fp32 values (GB/s, share of HBM bandwidth, bytes identical to the numba CPU path, and
the profiler's kernel-only GB/s beside the wall's), same-run baselines; one MobileNetV2 step whose every
boundary tensor the triton and the numba backends both encode and decode (anomalies listed, offending
tensors saved to $OUT); and the 5-stage / 4-micro-batch in-process step, dense vs top-k 0.1 + 4-bit with
codecs on the torch and on the triton backend.

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


def _line(r: dict) -> str:
    kernels = f"{r['kernel_encode_gbps']:7.0f} / {r['kernel_decode_gbps']:5.0f} ({r['device_ops']})" if "device_ops" in r else ""
    return (f"{r['config']:20} {r['bits_per_element']:8.3f} {r['rel_l2']:8.4f} {r['encode_gbps']:9.1f} "
            f"{r['decode_gbps']:9.1f} {r['round_trip_gbps']:9.1f} {r['hbm_percent']:6.1f}  {r['check']:11} {kernels}")


def codec_rows(x: torch.Tensor, widths: list[int], cpu_check: set[str], repeats: int, peak: float,
               baselines: bool = True) -> list[dict]:
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
        if x.is_cuda:  # wall time beside the device's own: what is left is launches, host work and syncs
            k_enc, n_enc, top_enc = kernel_times(lambda c=codec: c.encode(x, device_payload=True))
            k_dec, n_dec, top_dec = kernel_times(lambda p=payload: decode(p))
            if not (n_enc and n_dec):  # no CUPTI here: the profiler saw no device ops
                continue
            rows[-1].update(kernel_encode_gbps=4 * x.numel() / 1e3 / max(k_enc, 1e-3),
                            kernel_decode_gbps=4 * x.numel() / 1e3 / max(k_dec, 1e-3), device_ops=f"{n_enc}+{n_dec}",
                            encode_top_us=top_enc, decode_top_us=top_dec)
    if not baselines:
        return rows
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
    """Time per batch, dense and top-k 0.1 + 4-bit with codecs on the torch and on the triton backend. A run
    that fails (the triton quantize's refusal on 2026-11-30) is a row with its error, not the end of the check."""
    from benchmarks.gpu_engine_check import CONFIGS, spec, time_config
    from worker.codecs import chain

    rows = []
    for name, backend in (("dense fp32", "torch"), ("topk 0.1 + 4-bit", "torch"), ("topk 0.1 + 4-bit", "triton")):
        os.environ[chain.GPU_BACKEND_ENV] = backend
        used = chain.pick_backend("auto", torch.device(device))  # numba in a CPU dry run
        row: dict[str, Any] = {"config": f"gpipe {name}" + ("" if name.startswith("dense") else f" ({used})")}
        try:
            result = time_config(spec(device, batch, CONFIGS[name], "gpipe", "fp32", model), steps)
        except Exception as e:  # noqa: BLE001 - reported in the table and the JSON
            row["error"] = f"{type(e).__name__}: {e}"
        else:
            row.update(ms_per_batch=result["ms_per_batch"], ratio=result["ratio"], err_fwd=result["err_fwd"])
            if rows and "ms_per_batch" in rows[0]:
                row["vs_dense"] = row["ms_per_batch"] / rows[0]["ms_per_batch"]
        rows.append(row)
    os.environ.pop(chain.GPU_BACKEND_ENV, None)
    return rows


def boundary_check(device: str, batch: int, model: str, keep: int = 2) -> dict:
    """One top-k 0.1 + 4-bit step on the triton backend in which every boundary tensor is also encoded
    by numba on the host (the same generator state) and every payload decoded by both: the first real
    tensors the triton kernels mishandle, with their statistics. The numba result goes on, so one
    anomaly does not hide the next. Up to `keep` offending tensors are saved to $OUT for a CPU replay
    (TRITON_INTERPRET=1)."""
    import copy

    from benchmarks.gpu_engine_check import CONFIGS, spec
    from slimpipe.spec import parse_spec
    from worker.codecs import CodecError, chain
    from worker.train import Experiment

    calls: list[dict] = []
    saved: list[str] = []
    encode, decode = chain.encode, chain.decode

    def keep_tensor(x: torch.Tensor, what: str) -> None:
        if os.environ.get("OUT") and len(saved) < keep:
            path = os.path.join(os.environ["OUT"], f"boundary_{len(calls) - 1}_{what}.pt")
            torch.save(x.detach().cpu(), path)
            saved.append(path)

    def checked_encode(x: torch.Tensor, codec_spec, **options):
        options.pop("device_payload", None)  # host bytes from both backends, compared byte for byte
        flat = x.detach().float().reshape(-1)
        entry: dict[str, Any] = {"call": len(calls), "shape": list(x.shape), "finite": bool(torch.isfinite(flat).all()),
                                 "absmax": float(flat.abs().max()) if flat.numel() else 0.0,
                                 "zeros": float((flat == 0).float().mean()) if flat.numel() else 0.0}
        calls.append(entry)
        host = {**options, "backend": "numba", "rng": copy.deepcopy(options["rng"])}
        if isinstance(host.get("keys"), torch.Tensor):
            host["keys"] = host["keys"].cpu()
        try:
            reference = encode(x.detach().cpu(), codec_spec, **host)
        except CodecError as e:
            reference, entry["numba"] = None, f"refused: {e}"
        try:
            payload = encode(x, codec_spec, **{**options, "backend": "triton"})
        except CodecError as e:
            entry["triton"] = f"refused: {e}"
            keep_tensor(x, "refused")
            if reference is None:
                raise
            return reference
        entry["bytes"] = "same" if reference is not None and bytes(payload) == bytes(reference) else "DIFFER"
        if entry["bytes"] != "same":
            keep_tensor(x, "differ")
        return reference if reference is not None else payload

    def checked_decode(payload, *, device=None, backend="auto"):
        got = decode(payload, device=device, backend="triton")
        want = decode(bytes(payload) if isinstance(payload, torch.Tensor) else payload, device="cpu", backend="numba")
        same = torch.equal(got[0].cpu(), want[0])
        if calls:
            calls[-1].setdefault("decodes", []).append("same" if same else
                                                      f"DIFFER max {float((got[0].cpu() - want[0]).abs().max()):.3g}")
        return (want[0].to(got[0].device), *want[1:])

    chain.encode, chain.decode = checked_encode, checked_decode
    error = None
    try:
        exp = Experiment(parse_spec(spec(device, batch, CONFIGS["topk 0.1 + 4-bit"], "gpipe", "fp32", model)))
        x, y, ids = exp.get_batch(0)
        exp.optimizer.zero_grad(set_to_none=True)
        exp.runner.train_step(x, y, ids)
    except Exception as e:  # noqa: BLE001 - reported
        error = f"{type(e).__name__}: {e}"
    finally:
        chain.encode, chain.decode = encode, decode
    bad = [c for c in calls if c.get("bytes") != "same" or any(d != "same" for d in c.get("decodes", []))]
    return {"calls": len(calls), "anomalies": bad, "saved": saved, "error": error}


def kernel_times(fn) -> tuple[float, int, list[tuple[str, float]]]:
    """(microseconds the device spent in kernels and copies, how many, the five longest by name) for one
    call of fn, from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            _sync()
    except RuntimeError as e:  # a profiler that cannot start must not end the check
        print(f"profiler: {e}", file=sys.stderr)
        return 0.0, 0, []
    device = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_name: dict[str, float] = {}
    for e in device:
        by_name[e.name[:60]] = by_name.get(e.name[:60], 0.0) + e.self_device_time_total
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:5]
    return sum(e.self_device_time_total for e in device), len(device), top


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
    parser.add_argument("--tiles", default="2048", help="values per program to try beside triton_bits.TILE (widths "
                        "1, 4, 11, 16 and top-k): fewer instructions per value, fewer programs resident (benchmarks/triton_sass.py)")
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
    print(f"{'config':20} {'bits/el':>8} {'rel L2':>8} {'enc GB/s':>9} {'dec GB/s':>9} {'rt GB/s':>9} {'HBM %':>6}  "
          f"{'check':11} kernels only: enc / dec GB/s (device ops)")
    for r in rows:
        print(_line(r))
    for r in rows:  # where the device time of the slowest rows goes
        if "encode_top_us" in r and (r["config"].startswith("top") or r["round_trip_gbps"] < 300):
            for side in ("encode", "decode"):
                print(f"  {r['config']} {side}: " + ", ".join(f"{name} {us:.0f} us" for name, us in r[f"{side}_top_us"]))
    from worker.codecs import triton_bits

    default_tile = triton_bits.TILE
    for t in [int(t) for t in args.tiles.split(",") if t]:
        triton_bits.TILE = t
        for r in codec_rows(x, [b for b in (1, 4, 11, 16) if str(b) in args.widths.split(",")], set(), args.repeats,
                            args.peak_gbps, baselines=False):
            r["config"] += f" tile {t}"
            rows.append(r)
            print(_line(r))
        triton_bits.TILE = default_tile
    del x
    boundaries = boundary_check(args.device, args.batch, args.model)
    print(f"{args.model}, one top-k 0.1 + 4-bit step on the triton backend beside numba: {boundaries['calls']} "
          f"encodes, {len(boundaries['anomalies'])} anomalies" + (f", stopped: {boundaries['error']}" if boundaries["error"]
                                                                 else ""))
    for a in boundaries["anomalies"][:8]:
        print("  ", json.dumps(a))
    steps = step_rows(args.device, args.batch, args.steps, args.model)
    print(f"{args.model}, its default stages (MobileNetV2: 5), gpipe, 4 micro-batches, batch {args.batch}, in-process")
    for r in steps:
        if "error" in r:
            print(f"{r['config']:36} {r['error']}")
            continue
        extra = f"  {r['vs_dense']:.2f}x dense" if "vs_dense" in r else ""
        print(f"{r['config']:36} {r['ms_per_batch']:8.1f} ms/batch  ratio {r['ratio']:6.2f}  err_fwd {r['err_fwd']:.3f}{extra}")
    mismatches = sum(r["check"] == "MISMATCH" for r in rows) + len(boundaries["anomalies"])
    print(f"total {time.perf_counter() - started:.1f} s; " + ("all checked payloads match the CPU bytes" if not mismatches
                                                             else f"{mismatches} configs or boundary tensors MISMATCH the CPU"))
    result = {"device": where, "elements": args.elements, "codecs": rows, "boundaries": boundaries, "step": steps}
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_triton_check.json"), "w") as f:
            json.dump(result, f, indent=1)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
