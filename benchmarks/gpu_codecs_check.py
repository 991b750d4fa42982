"""Short CUDA check of the torch codec backend: GB/s, byte-equality with the CPU path, and baselines.

Run on a GPU machine:  python -m benchmarks.gpu_codecs_check [--elements N] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from slimpipe.spec import CompressionSpec
from worker.codecs import decode, make_codec

CONFIGS = [
    ("fp16", {"dtype": "fp16"}),
    ("b2", {"bits": 2}),
    ("b4", {"bits": 4}),
    ("b8", {"bits": 8}),
    ("b10", {"bits": 10}),
    ("b4 channel", {"bits": 4, "scale": "channel"}),
    ("top0.1", {"topk": 0.1}),
    ("top0.1 b4", {"topk": 0.1, "bits": 4}),
    ("top0.1 b4 ans", {"topk": 0.1, "bits": 4, "entropy": "ans"}),
]


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, repeats):
    fn()
    _sync()
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _report(name, x, t_enc, t_dec, nbytes, y, note=""):
    n, gb = x.numel(), x.numel() * 4 / 1e9
    rel = float((x.double() - y.double().reshape(x.shape).to(x.device)).norm() / x.double().norm())
    print(f"{name:18} {8 * nbytes / n:8.3f} {rel:8.4f} {gb / t_enc:9.2f} {gb / t_dec:9.2f} {gb / (t_enc + t_dec):9.2f}  {note}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=64 << 20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run of the same torch path")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device; nothing to check (try --device cpu for a dry run)", file=sys.stderr)
        return 1
    device = torch.device(args.device)
    x = torch.randn(args.elements // 4096, 4096, generator=torch.Generator().manual_seed(0)).to(device)
    x[:, ::97] *= 40.0  # a few outlier channels
    x_cpu = x.cpu()
    where = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (torch backend dry run)"
    print(f"{where}: {x.numel():,} fp32 elements, median of {args.repeats}; GB/s of fp32 input")
    print(f"{'config':18} {'bits/el':>8} {'rel L2':>8} {'enc GB/s':>9} {'dec GB/s':>9} {'rt GB/s':>9}  check")
    failures = 0
    for name, fields in CONFIGS:
        spec = CompressionSpec(**fields)
        codec = make_codec(spec, backend="torch")  # torch ops on the tensor's device
        t_enc, payload = _timed(lambda c=codec: c.encode(x), args.repeats)
        t_dec, y = _timed(lambda p=payload: decode(p, device=device, backend="torch"), args.repeats)
        same_cpu = decode(payload)  # the CPU (numba) decoder reads GPU-written bytes
        ok = torch.equal(same_cpu, y.cpu())
        if spec.topk is None:  # dense configs: GPU and CPU must write identical bytes
            ok = ok and payload == make_codec(spec, backend="numba").encode(x_cpu)
        failures += not ok
        _report(name, x, t_enc, t_dec, len(payload), y, "ok" if ok else "MISMATCH with the CPU path")
    flat = x.reshape(-1)
    t_enc, h = _timed(lambda: flat.half(), args.repeats)
    t_dec, y = _timed(lambda: h.float(), args.repeats)
    _report("base fp16 cast", x, t_enc, t_dec, h.numel() * 2, y)
    lo, hi = flat.min().item(), flat.max().item()
    scale = (hi - lo) / 255
    t_enc, q = _timed(lambda: torch.quantize_per_tensor(flat, scale, int(round(-lo / scale)) - 128, torch.qint8), args.repeats)
    t_dec, y = _timed(lambda: q.dequantize(), args.repeats)
    _report("base torch int8", x, t_enc, t_dec, q.numel(), y)
    k = flat.numel() // 10
    t_enc, pair = _timed(lambda: (lambda i: (flat[i], i))(torch.topk(flat.abs(), k, sorted=False).indices), args.repeats)
    t_dec, y = _timed(lambda: torch.zeros_like(flat).scatter_(0, pair[1], pair[0]), args.repeats)
    _report("base torch.topk 0.1", x, t_enc, t_dec, k * 12, y)
    print("all GPU payloads agree with the CPU path" if not failures else f"{failures} configs disagree with the CPU path")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
