"""The seed's sweep over the service: keep ratio of the backward top-k at every boundary, then the compare table.

    make run                                  # in one terminal: API + one worker on 127.0.0.1:8000
    .venv/bin/python examples/client_sweep.py # in another: submits 5 runs, waits, prints the comparison

Offline and on CPU: the small CNN on scikit-learn's digits (examples/digits_cnn_topk.yaml), shortened
to --steps steps per run. SLIMPIPE_URL / SLIMPIPE_API_TOKEN select another server.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from slimpipe.client import Client
from slimpipe.commands.compare import render
from slimpipe.spec import load_spec_text, set_path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=HERE / "digits_cnn_topk.yaml")
    parser.add_argument("--keep", default="1,0.8,0.6,0.5,0.4", help="backward top-k keep ratios (the seed's table)")
    parser.add_argument("--steps", type=int, default=150, help="training steps per run")
    parser.add_argument("--url", help="default $SLIMPIPE_URL or http://127.0.0.1:8000")
    args = parser.parse_args()

    spec = load_spec_text(args.spec.read_text())
    spec = set_path(spec, "name", "digits-cnn-3stage backward-topk-sweep")
    spec = set_path(spec, "compression.default", {"forward": {}, "backward": {}})  # the sweep sets the backward top-k
    spec = set_path(spec, "train.epochs", None)
    spec = set_path(spec, "train.max_steps", args.steps)
    spec = set_path(spec, "train.eval_every", max(args.steps // 5, 1))
    keep = [float(k) for k in args.keep.split(",")]

    with Client(args.url) as client:
        run_ids = client.submit(spec, sweep={"compression.default.backward.topk": keep}, tags=["seed-sweep"])
        print(f"submitted runs {run_ids}; waiting ...", flush=True)
        for run_id in run_ids:
            run = client.wait(run_id)
            print(f"  run {run_id}: {run['status']}" + (f" ({run['error']})" if run["error"] else ""), flush=True)
        print(render(client.compare(run_ids)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
