"""The same spec in a worker-style forked training child and in a fresh `slimpipe train` process.

Contenders, alternated round by round: a fresh interpreter (what `slimpipe train` is); a child forked
from a forkserver that preloaded what the worker's does (`worker.supervisor.PRELOAD`); and that child
with the thread order this project had before (torch's threads set before numba's pool starts), to
show the cause. Reports the summaries' median CPU seconds per step, wall seconds per step and the
torch threads the run ended with.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
from pathlib import Path
from typing import Any

import yaml

DEFAULT_SPEC = Path(__file__).resolve().parent.parent / "examples" / "digits_cnn_topk.yaml"


def train_once(spec: dict[str, Any], old_order: bool, results: Any) -> None:
    """Train in this process and put (cpu s/step, wall s/step, torch threads) on `results`."""
    import torch

    from worker import train

    if old_order:  # before the fix: torch first, then numba's pool start resets OpenMP's thread count
        threads = spec["train"]["threads"]
        torch.set_num_threads(threads)
        import numba

        numba.set_num_threads(threads)
        spec = {**spec, "train": {**spec["train"], "threads": None}}
    summary = train.run(spec)
    results.put((summary["time_per_batch_s"], summary["wall_time_per_batch_s"], torch.get_num_threads()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", default=str(DEFAULT_SPEC), help="spec to run (default: the offline digits example)")
    parser.add_argument("--steps", type=int, default=30, help="steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per contender, alternated")
    parser.add_argument("--threads", type=int, default=1, help="the spec's train.threads")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    from worker.supervisor import PRELOAD

    spec = yaml.safe_load(Path(args.spec).read_text())
    spec["train"] = {**spec.get("train", {}), "epochs": None, "max_steps": args.steps, "eval_every": 10**6}
    spec["train"]["threads"] = args.threads
    fresh = multiprocessing.get_context("spawn")
    forked = multiprocessing.get_context("forkserver")
    forked.set_forkserver_preload([*PRELOAD, "benchmarks.threads"])
    contenders: dict[str, tuple[Any, bool]] = {
        "slimpipe train (fresh process)": (fresh, False),
        "worker child (forkserver)": (forked, False),
        "worker child, old thread order": (forked, True),
    }
    seen: dict[str, list[tuple[float, float, int]]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, (ctx, old_order) in contenders.items():
            results = ctx.Queue()
            process = ctx.Process(target=train_once, args=(spec, old_order, results))
            process.start()
            seen[name].append(results.get(timeout=600))
            process.join()
    print(f"{Path(args.spec).name}, {args.steps} steps, threads {args.threads}, {args.rounds} rounds; medians over rounds")
    print(f"{'contender':34} {'CPU ms/step':>12} {'wall ms/step':>13} {'torch threads':>14}")
    out: dict[str, Any] = {}
    for name, runs in seen.items():
        cpu = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        threads = sorted({r[2] for r in runs})
        out[name] = {"cpu_s_per_step": cpu, "wall_s_per_step": wall, "torch_threads": threads}
        print(f"{name:34} {cpu * 1e3:12.1f} {wall * 1e3:13.1f} {','.join(map(str, threads)):>14}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=2))
    return 0
