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
    parser.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="PATH=V1,V2",
        help="one run per value, one after another (repeat for a grid), e.g. compression.default.backward.topk=1,0.5",
    )
    parser.add_argument(
        "--sweep-file", help="a YAML mapping of dotted path -> list of values (e.g. examples/*.sweep.yaml)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt if it exists")
    parser.add_argument(
        "--no-progress", action="store_true", help="a line per step instead of the progress bar, even on a terminal"
    )


def _sweep(args: argparse.Namespace) -> dict[str, list[Any]]:
    from slimpipe.commands.submit import read_sweep

    return read_sweep(args.sweep_file, args.sweep)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from slimpipe.spec import apply_settings, expand_sweep, load_spec_text
    from worker.memory import keep_freed_memory

    keep_freed_memory()  # see worker/memory.py: the training process reuses freed tensors

    spec_path = Path(args.spec)
    if not spec_path.exists():
        print(f"slimpipe: spec file {spec_path} does not exist", file=sys.stderr)
        return 2
    points = expand_sweep(apply_settings(load_spec_text(spec_path.read_text()), args.set), _sweep(args) or None)
    results = []
    for k, (values, spec) in enumerate(points):
        out = args.out
        if len(points) > 1:
            label = ",".join(f"{path.rsplit('.', 2)[-2]}.{path.rsplit('.', 1)[-1]}={v}" for path, v in values.items())
            print(f"== run {k + 1}/{len(points)}: {label}")
            out = str(Path(args.out) / f"{k:02d}") if args.out else None
        code, summary = _train_one(spec, out, args)
        if code:
            return code
        results.append((values, summary))
    if len(points) > 1:
        print(_table(results))
    return 0


BAR_FIGURES = ("loss_train", "acc1_val", "ratio", "time_per_batch")


def _train_one(spec: Any, out: str | None, args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from tqdm import tqdm

    from worker.pipeline.launch import StageFailed
    from worker.pipeline.partition import PartitionError
    from worker.train import TrainingDiverged
    from worker.train import run as train

    # The bar's time left is the engine's (median step and evaluation times: worker.train.TimeLeft), not
    # tqdm's rate, which would count the first step's compilation and every evaluation's pause.
    bar = None if args.no_progress or not sys.stderr.isatty() else tqdm(
        total=1, unit="step", dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
    shown: dict[str, str] = {}

    def on_log(line: str) -> None:
        # On a terminal the bar carries the per-step figures; other lines (resume, stop) print above it.
        if bar is None:
            print(line)
        elif line.startswith("step:"):
            pairs = (part.split(":", 1) for part in line.split() if ":" in part)
            shown.update({key: value for key, value in pairs if key in BAR_FIGURES})
        else:
            bar.write(line)

    def on_progress(step: int, total: int, eta_s: float | None = None) -> None:
        if bar is not None:
            bar.total = total
            bar.n = step
            left = {"left": tqdm.format_interval(eta_s)} if eta_s is not None else {}
            bar.set_postfix({**left, **shown}, refresh=False)
            bar.refresh()

    try:
        summary = train(spec, on_log=on_log, on_progress=on_progress, out_dir=out, resume=args.resume)
    except (PartitionError, ValueError) as exc:
        if isinstance(exc, TrainingDiverged):
            print(f"slimpipe: training diverged: {exc}", file=sys.stderr)
            return 1, {}
        print(f"slimpipe: {exc}", file=sys.stderr)
        return 2, {}
    except StageFailed as exc:  # its traceback, if it had one, is above: the stage's stderr is ours
        print(f"slimpipe: {exc}", file=sys.stderr)
        return 1, {}
    finally:
        if bar is not None:
            bar.close()
    print(
        f"done: {summary['steps']} steps, best val acc {summary['best_val_acc']:.2f}%, "
        f"final val acc {summary['final_val_acc']:.2f}%, {summary['wire_bytes_per_step'] / 1e3:.1f} kB/step on the wire "
        f"(x{summary['compression_ratio']:.2f} smaller than fp32), {summary['time_per_batch_s'] * 1e3:.1f} ms/batch ({summary.get('time_clock', 'wall')} median), "
        f"{summary['wall_s']:.1f} s" + (f"; files in {out}" if out else "")
    )
    return 0, summary


def _table(results: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    header = f"{'sweep point':40} {'best val':>9} {'final val':>9} {'kB/step':>9} {'ratio':>7} {'ms/batch':>9}"
    rows = [header]
    for values, s in results:
        label = ", ".join(f"{path.rsplit('.', 1)[-1]}={v}" for path, v in values.items())
        rows.append(
            f"{label:40} {s['best_val_acc']:9.2f} {s['final_val_acc']:9.2f} {s['wire_bytes_per_step'] / 1e3:9.1f} "
            f"{s['compression_ratio']:7.2f} {s['time_per_batch_s'] * 1e3:9.1f}"
        )
    return "\n".join(rows)
