"""`slimpipe bench codecs`: wire size, error and GB/s of boundary codecs against torch/zstd baselines.

With `--device cuda` the tensors live on the GPU, codecs run on the backend `auto` picks there (torch,
or triton where SLIMPIPE_GPU_CODECS=triton; `--backend triton` asks for it: payloads then stay on the
device), the baselines run there too (zstd aside), and each row adds the share of the
device's memory bandwidth it reaches: the least traffic a round trip needs (read the fp32 input,
write the payload, read it back, write the fp32 output) over its time, against `--peak-gbps`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings

CONFIGS = (
    [("fp16", {"dtype": "fp16"}), ("bf16", {"dtype": "bf16"})]
    + [(f"b{b}", {"bits": b}) for b in range(1, 17)]
    + [
        ("b4 tensor", {"bits": 4, "scale": "tensor"}),
        ("b4 channel", {"bits": 4, "scale": "channel"}),
        ("b8 stochastic", {"bits": 8, "rounding": "stochastic"}),
        ("top0.9", {"topk": 0.9}),
        ("top0.5", {"topk": 0.5}),
        ("top0.1", {"topk": 0.1}),
        ("top0.01", {"topk": 0.01}),
        ("top0.1 b4", {"topk": 0.1, "bits": 4}),
        ("top0.1 b8", {"topk": 0.1, "bits": 8}),
        ("top0.1 b4 tensor huff", {"topk": 0.1, "bits": 4, "scale": "tensor", "entropy": "huffman"}),
        ("top0.1 b4 tensor ans", {"topk": 0.1, "bits": 4, "scale": "tensor", "entropy": "ans"}),
        ("top0.1 b4 huff", {"topk": 0.1, "bits": 4, "entropy": "huffman"}),
        ("top0.1 b4 ans", {"topk": 0.1, "bits": 4, "entropy": "ans"}),
        ("b4 huff", {"bits": 4, "entropy": "huffman"}),
        ("b4 ans", {"bits": 4, "entropy": "ans"}),
        ("b8 tensor ans", {"bits": 8, "scale": "tensor", "entropy": "ans"}),
        ("step0.6 ans", {"bits": 8, "scale": "tensor", "step_std": 0.6, "entropy": "ans"}),
        ("step3 ans", {"bits": 8, "scale": "tensor", "step_std": 3.0, "entropy": "ans"}),
        ("rate1.9 ans", {"bits": 8, "scale": "tensor", "rate": 1.9, "entropy": "ans"}),
        ("rate1 ans", {"bits": 8, "scale": "tensor", "rate": 1.0, "entropy": "ans"}),
    ]
)
QUICK = ("fp16", "b1", "b4", "b8", "b10", "b16", "b4 channel", "top0.1", "top0.1 b4", "top0.1 b4 tensor ans",
         "top0.1 b4 huff", "b4 ans")
KINDS = ("gaussian", "heavy", "transformer", "relu")
DEFAULT_KINDS = KINDS[:3]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--elements", type=int, default=16 << 20, help="fp32 elements per tensor (default 16M)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per row; the median is reported")
    parser.add_argument("--quick", action="store_true", help="fewer configs, 1M elements, 1 repeat")
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS),
                        help="tensor kinds: gaussian,heavy,transformer (default), relu (activations, half zeros)")
    parser.add_argument("--only", default="", help="comma-separated config names to run (default: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch and numba threads (default: all cores)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc's malloc as it is (default: keep freed memory, as training workers do)")
    parser.add_argument("--json", action="store_true", help="print rows as JSON instead of a table")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: tensors, codecs and baselines on the GPU")
    parser.add_argument("--backend", default="auto", help="codec backend (auto: numba on cpu; on cuda torch, or triton where SLIMPIPE_GPU_CODECS=triton)")
    parser.add_argument("--peak-gbps", type=float, default=4800.0,
                        help="device memory bandwidth for the HBM share column (default: H200, 4800 GB/s)")


def make_tensor(kind: str, n: int, seed: int = 0):
    """Gaussian; Student-t (df=2) heavy tails; a (n/4096, 4096) residual stream with ~1% outlier channels; or
    ReLU activations (a Gaussian with its negative half zero)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        return torch.randn(n, generator=g)
    if kind == "heavy":
        normal, chi = torch.randn(n, generator=g), torch.randn(n, 2, generator=g).square().sum(1)
        return normal / (chi / 2).sqrt()
    if kind == "relu":
        return torch.randn(n, generator=g).clamp(min=0)
    width = 4096 if n % 4096 == 0 else n
    x = torch.randn(n // width, width, generator=g)
    outliers = torch.randperm(width, generator=g)[: max(1, width // 100)]
    x[:, outliers] *= 40.0
    return x


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn, repeats: int):
    """(median wall seconds, median process CPU seconds over all threads, last result); GPU work is
    waited for inside each timing."""
    fn()  # warm: JIT, page faults, allocator
    _sync()
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        _sync()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls), statistics.median(cpus), out


def information_bound_bits(payload: bytes) -> float:
    """Index set n*H(k/n) + kept symbols at their empirical entropy (or dtype bits) + scales, in bits."""
    import numpy as np

    from worker.codecs import bitpack, entropy, indexset, wire

    header, sections = wire.unpack(payload if isinstance(payload, bytes) else bytes(payload.cpu().numpy()))
    n, k = header.numel, header.kept
    bits = n * indexset.binary_entropy(k / n) if header.topk else 0.0
    if not header.bits:
        return bits + k * (16 if header.value_dtype in ("float16", "bfloat16") else 32)
    if header.entropy:
        symbols = entropy.decode(sections["model"], sections["values"], k, header.bits)
    else:
        symbols = bitpack.unpack(wire.aligned_words(sections["values"]), header.bits, k)
    return bits + entropy.empirical_entropy_bits(np.asarray(symbols)) + 8 * header.lengths["scales"]


def _row(name, kind, x, encode, decode, repeats, bound_bits=None, size=len, peak_gbps=None):
    n = x.numel()
    t_enc, cpu_enc, payload = _timed(encode, repeats)
    t_dec, cpu_dec, y = _timed(lambda: decode(payload), repeats)
    err = (x.reshape(-1).double() - y.reshape(-1).double().to(x.device))
    nbytes = size(payload)
    gb = n * 4 / 1e9
    traffic = (8 * n + 2 * nbytes) / 1e9  # fp32 in and out, the payload out and back in
    return {
        "hbm_fraction": None if peak_gbps is None else traffic / (t_enc + t_dec) / peak_gbps,
        "config": name, "tensor": kind, "bits_per_element": 8 * nbytes / n, "ratio": 4 * n / nbytes,
        "max_error": float(err.abs().max()), "rel_l2_error": float(err.norm() / x.double().norm()),
        "encode_gbps": gb / t_enc, "decode_gbps": gb / t_dec, "round_trip_gbps": gb / (t_enc + t_dec),
        "round_trip_cpu_gbps": gb / max(cpu_enc + cpu_dec, 1e-9),  # per core-second: robust to a busy machine
        "bound_bits_per_element": None if bound_bits is None else bound_bits(payload) / n,
    }


def _baselines(kind, x, repeats, peak_gbps=None):
    import torch
    import zstandard

    flat = x.reshape(-1)
    k = max(1, round(0.1 * flat.numel()))
    tensor_bytes = lambda t: t.numel() * t.element_size()  # noqa: E731
    rows = [_row("base fp16 cast", kind, x, lambda: flat.half(), lambda h: h.float(), repeats, size=tensor_bytes,
                 peak_gbps=peak_gbps)]

    def int8_encode():
        lo, hi = flat.min().item(), flat.max().item()
        scale = max(hi - lo, 1e-30) / 255
        with warnings.catch_warnings():  # deprecated in torch, but it is the baseline the issue names
            warnings.simplefilter("ignore", UserWarning)
            return torch.quantize_per_tensor(flat, scale, int(round(-lo / scale)) - 128, torch.qint8)

    rows.append(_row("base torch int8", kind, x, int8_encode, lambda q: q.dequantize(), repeats, size=tensor_bytes,
                     peak_gbps=peak_gbps))

    def topk_encode():
        idx = torch.topk(flat.abs(), k, sorted=False).indices
        return flat[idx], idx

    def topk_decode(pair):
        return torch.zeros_like(flat).scatter_(0, pair[1], pair[0])

    rows.append(_row("base torch.topk 0.1", kind, x, topk_encode, topk_decode, repeats,
                     size=lambda pair: tensor_bytes(pair[0]) + tensor_bytes(pair[1]), peak_gbps=peak_gbps))
    if x.device.type != "cpu":  # zstd runs on the host only
        return rows
    cctx, dctx = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()
    raw = flat.numpy()
    rows.append(_row("base zstd-1 fp32", kind, x, lambda: cctx.compress(raw.tobytes()),
                     lambda blob: torch.frombuffer(bytearray(dctx.decompress(blob)), dtype=torch.float32), repeats))
    return rows


def run(args: argparse.Namespace) -> int:
    import torch

    from slimpipe.spec import CompressionSpec
    from worker.codecs import decode, make_codec
    from worker.memory import keep_freed_memory

    malloc = "glibc default" if args.system_malloc else "keep freed" if keep_freed_memory() else "default"
    if args.threads:
        import numba

        torch.set_num_threads(args.threads)
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))

    n = (1 << 20) if args.quick and args.elements == 16 << 20 else args.elements
    repeats = 1 if args.quick else args.repeats
    names = [c for c in args.only.split(",") if c] or (list(QUICK) if args.quick else [name for name, _ in CONFIGS])
    configs = [(name, fields) for name, fields in CONFIGS if name in names]
    from worker.codecs.chain import pick_backend

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here; run on a GPU machine (or drop --device)")
        return 1
    backend = pick_backend(args.backend, device)
    on_device = backend == "triton" and device.type != "cpu"  # payloads stay on the GPU
    peak = args.peak_gbps if device.type != "cpu" else None
    rows = []
    for kind in [k for k in args.kinds.split(",") if k]:
        x = make_tensor(kind, n).to(device)
        for name, fields in configs:
            codec = make_codec(CompressionSpec(**fields), backend=backend)
            rows.append(_row(name, kind, x, lambda c=codec, t=x: c.encode(t, device_payload=on_device),
                             lambda p: decode(p, device=device, backend=backend), repeats, information_bound_bits,
                             peak_gbps=peak))
        rows.extend(_baselines(kind, x, repeats, peak))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    if args.json:
        print(json.dumps({"elements": n, "threads": torch.get_num_threads(), "malloc": malloc, "device": where,
                          "backend": backend, "rows": rows}, indent=1))
        return 0
    print(f"codecs on {n:,} fp32 elements, {where}, backend {backend}, malloc: {malloc}, median of {repeats}, load average "
          f"{os.getloadavg()[0]:.1f}; GB/s of fp32 input (rt/cpu: per CPU-second of this process, all threads); "
          "bound = n*H(k/n) + symbol entropy + scales, in bits/el (header excluded)")
    head = (f"{'config':22} {'tensor':11} {'bits/el':>8} {'ratio':>7} {'bound':>7} {'max err':>9} {'rel L2':>8} "
            f"{'enc GB/s':>8} {'dec GB/s':>8} {'rt GB/s':>8} {'rt/cpu':>7}" + (" HBM %" if peak else ""))
    print(head)
    print("-" * len(head))
    for r in rows:
        bound = "" if r["bound_bits_per_element"] is None else f"{r['bound_bits_per_element']:.3f}"
        print(f"{r['config']:22} {r['tensor']:11} {r['bits_per_element']:8.3f} {r['ratio']:7.2f} {bound:>7} "
              f"{r['max_error']:9.3g} {r['rel_l2_error']:8.4f} {r['encode_gbps']:8.2f} {r['decode_gbps']:8.2f} "
              f"{r['round_trip_gbps']:8.2f} {r['round_trip_cpu_gbps']:7.2f}"
              + (f" {100 * r['hbm_fraction']:5.1f}" if peak else ""))
    return 0
