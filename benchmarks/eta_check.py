"""How far the ETA a run shows is from the time it really had left, at every step of one run: the
engine's (worker.train.TimeLeft: median step and evaluation times) beside a rate since the start
(elapsed / steps done x steps to go, what the dashboard showed before).

    python -m benchmarks.eta_check examples/digits_cnn_topk.yaml --set train.max_steps=150 --set train.eval_every=25
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def _set(data: dict, dotted: str, value: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = int(value) if value.lstrip("-").isdigit() else value


def _spread(errors: list[float]) -> str:
    p90 = statistics.quantiles(errors, n=10, method="inclusive")[-1] if len(errors) > 1 else errors[0]
    return f"median {statistics.median(errors) * 100:5.0f} %   p90 {p90 * 100:5.0f} %"


def main(argv: list[str] | None = None) -> int:
    from slimpipe.spec import load_spec_text
    from worker import train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")
    parser.add_argument("--per-step", action="store_true", help="also print each step's time left and ETAs")
    args = parser.parse_args(argv)
    spec = load_spec_text(Path(args.spec).read_text())
    for item in args.set:
        _set(spec, *item.split("=", 1))

    marks: list[tuple[float, int, int, float | None]] = []
    start = time.perf_counter()
    train.run(spec, on_progress=lambda step, total, eta: marks.append((time.perf_counter(), step, total, eta)))
    end = time.perf_counter()
    rate, engine = [], []
    if args.per_step:
        print(f"{'step':>5} {'time left s':>12} {'rate ETA s':>11} {'engine ETA s':>13}")
    for now, step, total, eta in marks[:-1]:
        left = end - now
        rate.append(abs((now - start) / step * (total - step) - left) / left)
        if eta is not None:
            engine.append(abs(eta - left) / left)
        if args.per_step:
            shown = "-" if eta is None else f"{eta:.1f}"
            print(f"{step:>5} {left:>12.1f} {(now - start) / step * (total - step):>11.1f} {shown:>13}")
    print(f"{args.spec}: {len(marks)} steps in {end - start:.1f} s; |ETA - time left| / time left, over the steps")
    print(f"  rate since the start (before)   {_spread(rate)}")
    print(f"  engine, median times (now)      {_spread(engine)}   (from step 2: the first is left out)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
