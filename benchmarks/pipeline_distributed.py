"""`slimpipe bench pipeline --runner distributed`: measured speed-up of stage processes running at once, and
time per batch over emulated links, dense against compressed, beside the in-process runner's model.

Part 1, overlap: a model whose halves cost about the same, 2 stage processes with 1 thread each against
the same model in one process with one thread (a plain PyTorch loop on the full batch, and the same loop
over the micro-batches), in alternating rounds, each contender in a fresh interpreter; medians of
per-step wall times. The model is an MLP of 8 hidden layers of 1024 on 1536 inputs: the first layer (no
input gradient, 1.5x the inputs) costs what a hidden layer costs, so 4 + 4 layers are halves of equal
cost. Micro-batches of 512 rows cost what the full batch costs (of 256 rows: 1.10x). On MNIST's 784
inputs the second half would cost 1.35x the first, and GPipe's ideal would drop from 1.78x to 1.43x.
Part 2, links: for each link (none, 1 Gbit/s, 100 Mbit/s / 20 ms, 10 Mbit/s / 50 ms) and compression,
one process unsplit (plain loop), the inproc runner's modelled time, and the distributed runner measured
end to end, with the measured bubble beside GPipe's (p-1)/(m+p-1).
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.pipeline import _plain_step

OVERLAP_SPEC: dict[str, Any] = {
    "name": "bench-overlap",
    "model": {"name": "tiny_mlp", "options": {"hidden": 1024, "depth": 8}},
    "data": {"name": "synthetic_images", "batch_size": 4096, "options": {"shape": [1536], "n_train": 16384}},
    "pipeline": {"balance": 2, "microbatches": 8, "schedule": "gpipe", "runner": "distributed"},
    "link": {"emulate": False},
    "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
    "train": {"max_steps": 10, "eval_every": 10_000, "threads": 1, "seed": 0},
}
LINKS: dict[str, dict[str, Any]] = {
    "none": {"emulate": False},
    "1 Gbit/s": {"bandwidth_mbps": 1000, "latency_ms": 0.1},
    "100 Mbit/s 20 ms": {"bandwidth_mbps": 100, "latency_ms": 20},
    "10 Mbit/s 50 ms": {"bandwidth_mbps": 10, "latency_ms": 50},
}
COMPRESSION: dict[str, dict[str, Any]] = {
    "dense fp32": {},
    "8-bit": {"forward": {"bits": 8}, "backward": {"bits": 8}},
    "top-k 0.1 + 4-bit + ans": {
        "forward": {"topk": 0.1, "bits": 4, "entropy": "ans"},
        "backward": {"topk": 0.1, "bits": 4, "entropy": "ans"},
    },
    "top-k 0.05 + 2-bit": {"forward": {"topk": 0.05, "bits": 2}, "backward": {"topk": 0.05, "bits": 2}},
    "top-k 0.05 + 2-bit + ans": {
        "forward": {"topk": 0.05, "bits": 2, "entropy": "ans"},
        "backward": {"topk": 0.05, "bits": 2, "entropy": "ans"},
    },
}
DEFAULT_LINK_SPEC = Path(__file__).resolve().parent.parent / "examples" / "mnist_cnn_topk.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3, help="distributed: alternating rounds of the overlap part")
    parser.add_argument("--link-spec", default=str(DEFAULT_LINK_SPEC),
                        help="distributed: the spec the link part trains (default: the offline MNIST example)")
    parser.add_argument("--link-steps", type=int, default=6, help="distributed: steps per link x compression cell")
    parser.add_argument("--links", default=",".join(LINKS), help="distributed: links to measure, comma-separated")
    parser.add_argument("--skip-overlap", action="store_true", help="distributed: only the link part")
    parser.add_argument("--link-batch", type=int, help="distributed: batch size for the link part (default: the spec's)")


def _train(spec_data: dict[str, Any]) -> dict[str, Any]:
    from worker.memory import keep_freed_memory
    from worker.train import run

    keep_freed_memory()  # as in the worker's training child and `slimpipe train`: rank 0 runs in this process
    return run(copy.deepcopy(spec_data))


def _fresh(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a new interpreter: no contender inherits another's heap, threads or caches."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def _plain_times(spec_data: dict[str, Any], steps: int, microbatches: int) -> list[float]:
    """Per-step wall times of a plain PyTorch loop on the spec's model and batches, in this process."""
    import torch

    from slimpipe.spec import parse_spec
    from worker.memory import keep_freed_memory
    from worker.train import Experiment

    keep_freed_memory()
    exp = Experiment(parse_spec({**spec_data, "pipeline": {**spec_data["pipeline"], "runner": "inproc"}}))
    optimizer = torch.optim.SGD(exp.model.parameters(), lr=1e-3, momentum=0.9)
    times = []
    for k in range(steps + 1):
        x, y, _ = exp.get_batch(k)
        t0 = time.perf_counter()
        _plain_step(exp.model, optimizer, x, y, microbatches)
        times.append(time.perf_counter() - t0)
    return times[1:]


def overlap(args: argparse.Namespace) -> dict[str, Any]:
    spec = copy.deepcopy(OVERLAP_SPEC)
    m = spec["pipeline"]["microbatches"]
    plain_full: list[float] = []
    plain_m: list[float] = []
    distributed: list[float] = []
    bubbles: list[float] = []
    for _ in range(args.rounds):
        plain_full += _fresh(_plain_times, spec, 8, 1)
        plain_m += _fresh(_plain_times, spec, 8, m)
        summary = _fresh(_train, spec)
        distributed.append(summary["time_per_batch_s"])
        bubbles.append(summary["bubble_fraction"])
    rows = {
        "one process, 1 thread, plain loop, full batch": statistics.median(plain_full),
        f"one process, 1 thread, plain loop, {m} micro-batches": statistics.median(plain_m),
        f"2 stage processes x 1 thread, distributed gpipe, m={m}": statistics.median(distributed),
    }
    best_single = min(rows[k] for k in list(rows)[:2])
    hidden, depth = (spec["model"]["options"][k] for k in ("hidden", "depth"))
    print(f"overlap: tiny_mlp {hidden}x{depth} on {spec['data']['options']['shape'][0]} inputs, batch "
          f"{spec['data']['batch_size']}, balance 2, {args.rounds} alternating rounds, load {os.getloadavg()[0]:.1f}")
    print(f"{'contender':58} {'ms/batch':>9} {'throughput vs best 1-process':>29}")
    for name, seconds in rows.items():
        print(f"{name:58} {seconds * 1e3:9.1f} {best_single / seconds:28.2f}x")
    from worker.pipeline.distributed import gpipe_bubble

    print(f"bubble measured {statistics.median(bubbles):.2f}, GPipe ideal (p-1)/(m+p-1) = {gpipe_bubble(2, m):.2f}; "
          f"ideal speed-up 2*{m}/{m + 1} = {2 * m / (m + 1):.2f}x")
    return {"ms_per_batch": {k: v * 1e3 for k, v in rows.items()}, "speedup": best_single / rows[list(rows)[2]],
            "bubble": statistics.median(bubbles), "load": os.getloadavg()[0]}


def links(args: argparse.Namespace) -> dict[str, Any]:
    from slimpipe.spec import load_spec_text
    from worker.pipeline.distributed import gpipe_bubble

    base = load_spec_text(Path(args.link_spec).read_text())
    base["train"] = {**base.get("train", {}), "max_steps": args.link_steps, "eval_every": 10_000, "threads": 1}
    base.pop("epochs", None)
    base["train"].pop("epochs", None)
    base["pipeline"] = {**base.get("pipeline", {}), "schedule": "gpipe"}
    if args.link_batch:
        base["data"] = {**base["data"], "batch_size": args.link_batch}
    m = base["pipeline"].get("microbatches", 4)
    plain = statistics.median(_plain_times(base, args.link_steps, 1))
    out: dict[str, Any] = {"one_process_ms": plain * 1e3}
    print(f"\nlinks: {args.link_spec}, batch {base['data'].get('batch_size')}, gpipe m={m}, {args.link_steps} steps per cell (median after the first), "
          f"one process unsplit {plain * 1e3:.1f} ms/batch, load {os.getloadavg()[0]:.1f}")
    print(f"{'link':18} {'compression':26} {'ratio':>6} {'inproc modelled':>16} {'distributed':>12} "
          f"{'vs dense':>9} {'vs 1 proc':>9} {'bubble':>7} {'gpipe':>6}")
    for link_name in args.links.split(","):
        dense_ms = None
        for label, compression in COMPRESSION.items():
            spec = copy.deepcopy(base)
            spec["compression"] = {"default": compression}
            spec["link"] = {"bandwidth_mbps": 1e6, "latency_ms": 0.0} if link_name == "none" else dict(LINKS[link_name])
            modelled = _train({**spec, "pipeline": {**spec["pipeline"], "runner": "inproc"}})
            spec["link"] = dict(LINKS[link_name])
            measured = _train({**spec, "pipeline": {**spec["pipeline"], "runner": "distributed"}})
            ms = measured["time_per_batch_s"] * 1e3
            dense_ms = ms if dense_ms is None else dense_ms
            p = measured["n_stages"]
            row = {"ratio": measured["compression_ratio"], "modelled_ms": modelled["modelled_time_per_batch_s"] * 1e3,
                   "measured_ms": ms, "p90_ms": (measured["time_per_batch_p90_s"] or 0) * 1e3,
                   "bubble": measured["bubble_fraction"], "speedup_vs_dense": dense_ms / ms}
            out[f"{link_name} | {label}"] = row
            print(f"{link_name:18} {label:26} {row['ratio']:6.1f} {row['modelled_ms']:13.1f} ms {ms:9.1f} ms "
                  f"{dense_ms / ms:8.2f}x {plain * 1e3 / ms:8.2f}x {row['bubble']:7.2f} {gpipe_bubble(p, m):6.2f}")
    return out


def run(args: argparse.Namespace) -> int:
    results: dict[str, Any] = {}
    if not args.skip_overlap:
        results["overlap"] = overlap(args)
    results["links"] = links(args)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2, default=str))
    return 0
