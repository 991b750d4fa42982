"""A short (< 2 min) check of the engine on CUDA: correctness against a plain loop, then time per batch of
MobileNetV2 on synthetic CIFAR-size images in 5 stages (gpipe, 4 micro-batches), dense vs compressed.

    python -m benchmarks.gpu_engine_check            # on a GPU machine
    python -m benchmarks.gpu_engine_check --device cpu --steps 2 --batch 16   # smoke test anywhere
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from typing import Any

import torch

CONFIGS: dict[str, dict[str, Any]] = {
    "dense fp32": {},
    "fp16 cast": {"forward": {"dtype": "fp16"}, "backward": {"dtype": "fp16"}},
    "topk 0.1": {"forward": {"topk": 0.1}, "backward": {"topk": 0.1}},
    "8-bit": {"forward": {"bits": 8}, "backward": {"bits": 8}},
    "topk 0.1 + 4-bit": {"forward": {"topk": 0.1, "bits": 4}, "backward": {"topk": 0.1, "bits": 4}},
}


def spec(
    device: str,
    batch: int,
    compression: dict,
    schedule: str = "gpipe",
    precision: str = "fp32",
    model: str = "mobilenetv2_cifar",
) -> dict:
    return {
        "model": {"name": model},
        "data": {
            "name": "synthetic_images",
            "options": {"shape": [3, 32, 32], "num_classes": 10, "n_train": 4 * batch, "n_val": batch},
            "batch_size": batch,
        },
        "pipeline": {"microbatches": 4, "schedule": schedule},
        "compression": {"default": compression},
        "link": {"bandwidth_mbps": 1000, "latency_ms": 0.1},
        "train": {"max_steps": 10, "device": device, "precision": precision},
    }


def check_equivalence(device: str) -> float:
    """Compression off, no BatchNorm: 3 stages x 4 micro-batches == the unsplit model (max |delta param|)."""
    from slimpipe.spec import CompressionConfig
    from worker.pipeline.boundary import make_boundaries
    from worker.pipeline.partition import resolve
    from worker.pipeline.runner import InprocRunner
    from worker.zoo.vision import tiny_cnn

    torch.manual_seed(0)
    built = tiny_cnn({"width": 8}, num_classes=10, input_shape=(3, 16, 16))
    model = built.module.to(device).double()
    ref = copy.deepcopy(model)
    stages = [built.make_stage(items) for items in resolve(model, built.default_stages)]
    runner = InprocRunner(stages, make_boundaries(CompressionConfig(), 3), schedule="1f1b", microbatches=4)
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref))
    for _ in range(3):
        x = torch.randn(32, 3, 16, 16, device=device, dtype=torch.float64)
        y = torch.randint(0, 10, (32,), device=device)
        opt.zero_grad()
        runner.train_step(x, y)
        opt.step()
        ref_opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(x), y).backward()
        ref_opt.step()
    with torch.no_grad():
        return max(float((p - q).abs().max()) for p, q in zip(model.parameters(), ref.parameters(), strict=True))


def time_config(data: dict, steps: int) -> dict:
    from slimpipe.spec import parse_spec
    from worker.pipeline.timeline import link_transfers, makespan, transfer_sizes
    from worker.train import Experiment

    exp = Experiment(parse_spec(data))
    times, compute = [], []
    for k in range(steps + 3):
        x, y, ids = exp.get_batch(k)
        if exp.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        exp.optimizer.zero_grad(set_to_none=True)
        exp.runner.reset_stats()
        result = exp.runner.train_step(x, y, ids)
        exp.optimizer.step()
        if exp.device.type == "cuda":
            torch.cuda.synchronize()
        if k >= 3:
            times.append(time.perf_counter() - t0)
            compute.append(result.compute_s)
    stats = exp.runner.wire_stats()
    wire = sum(f.wire_bytes + b.wire_bytes for f, b in stats)
    dense = sum(f.dense_bytes + b.dense_bytes for f, b in stats)
    median_compute = {key: statistics.median(c[key] for c in compute) for key in compute[0]}
    modelled = {}
    for bw in (100, 1000, 10000):
        transfers = link_transfers(transfer_sizes(stats), bw, 0.1)
        serial = exp.spec.pipeline.schedule == "sequential"  # one device: nothing crosses a link
        modelled[bw] = makespan(exp.runner.actions, median_compute, {} if serial else transfers, serial=serial)
    return {
        "ms_per_batch": 1e3 * statistics.median(times),
        "wire_bytes": wire,
        "ratio": dense / wire,
        "err_fwd": stats[0][0].rel_error,
        "modelled_ms": {bw: 1e3 * s for bw, s in modelled.items()},
        "one_device_ms": 1e3 * makespan(exp.runner.actions, median_compute, {}, serial=True),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--model", default="mobilenetv2_cifar", help="tiny_cnn for a quick CPU smoke test")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        from worker.train import set_threads

        set_threads(1)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    if args.device == "cuda":
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    delta = check_equivalence(args.device)
    print(f"equivalence (tiny CNN, float64, 3 stages, 1f1b, 4 micro-batches): max |param delta| = {delta:.2e}")
    results: dict[str, Any] = {"equivalence_max_delta": delta, "runs": {}}
    print(f"{args.model}, synthetic 3x32x32, batch {args.batch}, default stages, 4 micro-batches")
    header = f"{'schedule/compression':34} {'ms/batch':>9} {'MB/step':>8} {'ratio':>6} {'err_fwd':>8} "
    print(header + "modelled ms @100M/1G/10G (one device)")
    rows = [("sequential", "dense fp32", "fp32"), ("gpipe", "dense fp32", "bf16")]
    rows += [("gpipe", name, "fp32") for name in CONFIGS]
    for schedule, name, precision in rows:
        result = time_config(spec(args.device, args.batch, CONFIGS[name], schedule, precision, args.model), args.steps)
        label = f"{schedule} {name}" + (" bf16 autocast" if precision == "bf16" else "")
        results["runs"][label] = result
        m = result["modelled_ms"]
        print(
            f"{label:34} {result['ms_per_batch']:9.1f} {result['wire_bytes'] / 1e6:8.2f} {result['ratio']:6.2f} "
            f"{result['err_fwd']:8.3f} {m[100]:8.1f} {m[1000]:7.1f} {m[10000]:7.1f} ({result['one_device_ms']:.1f})"
        )
    print(f"total {time.perf_counter() - t_start:.1f} s")
    print("JSON " + json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
