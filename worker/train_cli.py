"""`slimpipe train SPEC [--out DIR]`: train a spec locally, no service; one line per step, files in --out."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="experiment spec file (YAML or JSON)")
    parser.add_argument("--out", help="folder for metrics.jsonl, log.txt, summary.json and checkpoints")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a field, e.g. --set train.max_steps=20 --set compression.default.forward.topk=0.1",
    )
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")


def _overrides(data: dict[str, Any], settings: list[str]) -> dict[str, Any]:
    import yaml

    from slimpipe.spec import SpecError, set_path

    for setting in settings:
        path, sep, value = setting.partition("=")
        if not sep or not path:
            raise SpecError([{"field": setting, "message": "write --set as PATH=VALUE, e.g. train.max_steps=20"}])
        data = set_path(data, path, yaml.safe_load(value))
    return data


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from slimpipe.spec import load_spec_text, parse_spec

    spec_path = Path(args.spec)
    if not spec_path.exists():
        print(f"slimpipe: spec file {spec_path} does not exist", file=sys.stderr)
        return 2
    spec = parse_spec(_overrides(load_spec_text(spec_path.read_text()), args.set))

    from tqdm import tqdm

    from worker.pipeline.partition import PartitionError
    from worker.train import TrainingDiverged
    from worker.train import run as train

    bar = None if args.no_progress or not sys.stderr.isatty() else tqdm(total=1, unit="step", dynamic_ncols=True)

    def on_log(line: str) -> None:
        (bar.write if bar is not None else print)(line)

    def on_progress(step: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = step
            bar.refresh()

    try:
        summary = train(spec, on_log=on_log, on_progress=on_progress, out_dir=args.out, resume=args.resume)
    except (PartitionError, ValueError) as exc:
        if isinstance(exc, TrainingDiverged):
            print(f"slimpipe: training diverged: {exc}", file=sys.stderr)
            return 1
        print(f"slimpipe: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    ratio = summary["compression_ratio"]
    print(
        f"done: {summary['steps']} steps, best val acc {summary['best_val_acc']:.2f}%, "
        f"final val acc {summary['final_val_acc']:.2f}%, {summary['wire_bytes_per_step'] / 1e3:.1f} kB/step on the wire "
        f"(x{ratio:.2f} smaller than fp32), {summary['time_per_batch_s'] * 1e3:.1f} ms/batch, {summary['wall_s']:.1f} s"
        + (f"; files in {args.out}" if args.out else "")
    )
    return 0
