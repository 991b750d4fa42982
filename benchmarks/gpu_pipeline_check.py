"""A short check of the distributed runner on a lent GPU machine: MobileNetV2 in the seed's 5 stages, 4
micro-batches, dense vs top-k 0.1 + 4-bit, through `worker.train.run` end to end.

One GPU cannot hold one NCCL rank per stage, so the distributed rows are: 5 stage processes sharing the
one GPU (payloads cross over gloo on the host), and 5 stage processes on the CPU cores. Beside them the
in-process runner on the GPU (measured, and its modelled time with one GPU per stage).

    python -m benchmarks.gpu_pipeline_check                 # on the GPU machine; JSON to $OUT if set
    python -m benchmarks.gpu_pipeline_check --device cpu --batch 16 --steps 3 --threads 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu_engine_check import spec as engine_spec

CONFIGS = {
    "dense fp32": {},
    "top-k 0.1 + 4-bit": {"forward": {"topk": 0.1, "bits": 4}, "backward": {"topk": 0.1, "bits": 4}},
}
LINKS = {"none": {"emulate": False}, "1 Gbit/s 1 ms": {"bandwidth_mbps": 1000, "latency_ms": 1}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=3, help="CPU threads per stage process")
    args = parser.parse_args(argv)
    from worker.train import run

    rows: list[dict[str, Any]] = []
    print(f"MobileNetV2, 5 stages, gpipe m=4, batch {args.batch}, {args.steps} steps per row (median after the first)")
    print(f"{'runner':34} {'link':14} {'compression':20} {'ms/batch':>9} {'p90':>8} {'modelled':>9} {'bubble':>7} {'ratio':>6}")
    plan = [("inproc", args.device, "none"), ("distributed", args.device, "none"), ("distributed", args.device, "1 Gbit/s 1 ms"),
            ("distributed", "cpu", "none")]
    for runner, device, link in plan:
        for label, compression in CONFIGS.items():
            data = engine_spec(device, args.batch, compression)
            data["pipeline"]["runner"] = runner
            data["train"].update({"max_steps": args.steps, "eval_every": 10_000, "threads": args.threads})
            if runner == "distributed":
                data["link"] = LINKS[link]
            t0 = time.perf_counter()
            try:
                summary = run(data)
            except Exception as exc:  # report and go on: one failing row must not lose the others
                print(f"{runner + ' on ' + device:34} {link:14} {label:20} FAILED: {type(exc).__name__}: {exc}")
                rows.append({"runner": runner, "device": device, "link": link, "compression": label, "error": str(exc)})
                continue
            row = {
                "runner": runner, "device": device, "link": link, "compression": label,
                "ms_per_batch": summary["time_per_batch_s"] * 1e3,
                "p90_ms": (summary.get("time_per_batch_p90_s") or 0) * 1e3,
                "modelled_ms": summary["modelled_time_per_batch_s"] * 1e3,
                "bubble": summary.get("bubble_fraction"), "ratio": summary["compression_ratio"],
                "wall_s": time.perf_counter() - t0, "clock": summary.get("time_clock"),
            }
            rows.append(row)
            bubble = "-" if row["bubble"] is None else f"{row['bubble']:.2f}"
            print(f"{runner + ' on ' + device:34} {link:14} {label:20} {row['ms_per_batch']:9.1f} {row['p90_ms']:8.1f} "
                  f"{row['modelled_ms']:9.1f} {bubble:>7} {row['ratio']:6.1f}", flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_pipeline_check.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
