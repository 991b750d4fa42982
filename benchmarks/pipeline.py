"""`slimpipe bench pipeline`: time per batch per schedule, engine overhead against a plain PyTorch loop,
and modelled time per batch over 10 Mbit/s .. 1 Gbit/s links for dense fp32 and compressed boundaries.

Timings interleave the contenders step by step and report medians of wall time and of CPU time (process
time: what the code itself costs, unaffected by other processes on a busy machine). Modelled time replays
the gpipe table with measured per-action CPU times (codec work included) on one device per stage, plus
latency + bytes/bandwidth per transfer.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

DEFAULT_SPEC = Path(__file__).resolve().parent.parent / "examples" / "digits_cnn_topk.yaml"
BANDWIDTHS_MBPS = (10, 100, 1000)
COMPRESSION: dict[str, dict[str, Any]] = {
    "dense fp32": {},
    "fp16": {"forward": {"dtype": "fp16"}, "backward": {"dtype": "fp16"}},
    "topk 0.5": {"forward": {"topk": 0.5}, "backward": {"topk": 0.5}},
    "topk 0.1": {"forward": {"topk": 0.1}, "backward": {"topk": 0.1}},
    "8-bit": {"forward": {"bits": 8}, "backward": {"bits": 8}},
    "topk 0.1 + 4-bit + huffman": {
        "forward": {"topk": 0.1, "bits": 4, "entropy": "huffman"},
        "backward": {"topk": 0.1, "bits": 4, "entropy": "huffman"},
    },
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spec", default=str(DEFAULT_SPEC), help="spec to benchmark (default: the offline digits example)"
    )
    parser.add_argument("--steps", type=int, default=100, help="timed steps per contender")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a busy 2-core box)"
    )
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    parser.add_argument("--runner", choices=("inproc", "distributed"), default="inproc",
                        help="distributed: measured overlap and emulated links (benchmarks/pipeline_distributed.py)")
    from benchmarks import pipeline_distributed

    pipeline_distributed.add_arguments(parser)


def _experiment(spec_data: dict[str, Any], **changes: Any):
    from slimpipe.spec import parse_spec
    from worker.train import Experiment

    data = copy.deepcopy(spec_data)
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return Experiment(parse_spec(data))


def _plain_step(model, optimizer, x, y, microbatches: int) -> tuple[float, int]:
    """The baseline: an ordinary PyTorch loop (gradient accumulation when microbatches > 1) that, like any
    training loop and like the engine, reports the batch's loss and accuracy."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    loss_sum, correct = 0.0, 0
    for xs, ys in zip(torch.tensor_split(x, microbatches), torch.tensor_split(y, microbatches), strict=True):
        logits = model(xs)
        loss = torch.nn.functional.cross_entropy(logits, ys) * (len(ys) / len(y))
        loss.backward()
        loss_sum += loss.item()
        correct += int((logits.argmax(-1) == ys).sum())
    optimizer.step()
    return loss_sum, correct


def _engine_step(exp, x, y, ids) -> Any:
    exp.optimizer.zero_grad(set_to_none=True)
    exp.runner.reset_stats()
    result = exp.runner.train_step(x, y, ids)
    exp.optimizer.step()
    return result


def _interleaved(contenders: dict[str, Any], batches: list, steps: int) -> dict[str, tuple[float, float]]:
    """(median wall s, median CPU s) per step for each contender, one step of each in turn."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for step in contenders.values():  # warm-up (numba compiles, allocator settles)
        for k in range(3):
            step(*batches[k % len(batches)])
    for k in range(steps):
        for name, step in contenders.items():
            w0, c0 = time.perf_counter(), time.process_time()
            step(*batches[k % len(batches)])
            samples[name].append((time.perf_counter() - w0, time.process_time() - c0))
    return {
        name: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for name, v in samples.items()
    }


def run(args: argparse.Namespace) -> int:
    if args.runner == "distributed":
        from benchmarks import pipeline_distributed

        return pipeline_distributed.run(args)
    import torch

    from slimpipe.spec import load_spec_text
    from worker.pipeline.timeline import link_transfers, makespan, transfer_sizes
    from worker.train import set_threads

    set_threads(args.threads)
    spec_data = load_spec_text(Path(args.spec).read_text())
    m = spec_data.get("pipeline", {}).get("microbatches", 4)
    dense: dict[str, Any] = {"default": {}}
    results: dict[str, Any] = {"spec": args.spec, "threads": args.threads, "microbatches": m}

    # ---- schedules and engine overhead (compression off)
    base = _experiment(spec_data, compression=dense, pipeline__schedule="sequential", pipeline__microbatches=1)
    batches = [base.get_batch(k) for k in range(8)]
    plain_model = copy.deepcopy(base.model)
    plain_opt = torch.optim.SGD(plain_model.parameters(), lr=1e-3, momentum=0.9)
    contenders: dict[str, Any] = {
        "plain loop, full batch": lambda x, y, ids: _plain_step(plain_model, plain_opt, x, y, 1),
        f"plain loop, {m} accumulated micro-batches": lambda x, y, ids: _plain_step(plain_model, plain_opt, x, y, m),
        "engine sequential, m=1": lambda x, y, ids, e=base: _engine_step(e, x, y, ids),
    }
    experiments = {}
    for schedule in ("sequential", "gpipe", "1f1b"):
        exp = _experiment(spec_data, compression=dense, pipeline__schedule=schedule, pipeline__microbatches=m)
        experiments[schedule] = exp
        contenders[f"engine {schedule}, m={m}"] = lambda x, y, ids, e=exp: _engine_step(e, x, y, ids)
    compressed = _experiment(spec_data, pipeline__schedule="gpipe")
    contenders[f"engine gpipe, m={m}, spec compression"] = lambda x, y, ids, e=compressed: _engine_step(e, x, y, ids)
    times = _interleaved(contenders, batches, args.steps)
    plain1 = times["plain loop, full batch"]
    plain_m = times[f"plain loop, {m} accumulated micro-batches"]
    print(f"time per batch ({args.spec}, {args.threads} thread(s), median of {args.steps} interleaved steps)")
    print(f"{'contender':46} {'wall ms':>8} {'vs plain':>9} {'CPU ms':>8} {'vs plain':>9}")
    for name, (wall, cpu) in times.items():
        ref = plain1 if ("m=1" in name or "full batch" in name) else plain_m
        print(f"{name:46} {wall * 1e3:8.2f} {wall / ref[0] - 1:+9.1%} {cpu * 1e3:8.2f} {cpu / ref[1] - 1:+9.1%}")
    overhead = [times["engine sequential, m=1"][k] / plain1[k] - 1 for k in (0, 1)]
    overhead_m = [times[f"engine sequential, m={m}"][k] / plain_m[k] - 1 for k in (0, 1)]
    print(
        f"engine overhead, inproc sequential, compression off (wall / CPU): m=1 {overhead[0]:+.1%} / {overhead[1]:+.1%}, "
        f"m={m} {overhead_m[0]:+.1%} / {overhead_m[1]:+.1%}; target within 10%"
    )
    results["time_per_batch_s"] = {name: {"wall": w, "cpu": c} for name, (w, c) in times.items()}
    results["overhead_sequential_m1"] = {"wall": overhead[0], "cpu": overhead[1]}
    results[f"overhead_sequential_m{m}"] = {"wall": overhead_m[0], "cpu": overhead_m[1]}

    # ---- modelled time per batch over slow links
    latency_ms = float(spec_data.get("link", {}).get("latency_ms", 1.0))
    print(
        f"\nmodelled time per batch, gpipe over {len(base.stages)} stages (one device each), m={m}, "
        f"{latency_ms:g} ms latency, CPU time per action; ms (speed-up vs 1 device)"
    )
    print(
        f"{'compression':28} {'bytes/step':>11} {'ratio':>6} "
        + " ".join(f"{bw:>15}" for bw in ("10 Mbit/s", "100 Mbit/s", "1 Gbit/s"))
    )
    modelled: dict[str, Any] = {}
    for label, default in COMPRESSION.items():
        exp = _experiment(
            spec_data, compression={"default": default}, pipeline__schedule="gpipe", pipeline__microbatches=m
        )
        per_action: dict[tuple, list[float]] = {}
        exp.runner.clock = time.process_time
        for k in range(3 + min(args.steps, 30)):
            result = _engine_step(exp, *batches[k % len(batches)])
            if k >= 3:
                for key, seconds in result.compute_s.items():
                    per_action.setdefault(key, []).append(seconds)
        compute = {key: statistics.median(v) for key, v in per_action.items()}
        stats = exp.runner.wire_stats()
        wire = sum(f.wire_bytes + b.wire_bytes for f, b in stats)
        dense_bytes = sum(f.dense_bytes + b.dense_bytes for f, b in stats)
        one_device = makespan(exp.runner.actions, compute, {}, serial=True)
        row = {"wire_bytes": wire, "ratio": dense_bytes / wire, "one_device_s": one_device}
        cells = []
        for bw in BANDWIDTHS_MBPS:
            seconds = makespan(exp.runner.actions, compute, link_transfers(transfer_sizes(stats), bw, latency_ms))
            row[f"{bw}mbps_s"] = seconds
            cells.append(f"{seconds * 1e3:8.1f} (x{one_device / seconds:.2f})")
        modelled[label] = row
        print(f"{label:28} {wire:11d} {dense_bytes / wire:6.2f} " + " ".join(f"{c:>15}" for c in cells))
    results["modelled"] = modelled
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2, default=str))
    return 0
