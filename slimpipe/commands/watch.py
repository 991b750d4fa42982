"""`slimpipe watch RUN`: a progress bar and the latest metrics until the run ends."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from slimpipe import names
from slimpipe.client import ClientError
from slimpipe.commands.remote import add_service_arguments, client_from, time_left

SHOWN = (names.TRAIN_LOSS, names.TRAIN_ACC, names.VAL_ACC, names.WIRE_RATIO)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=int, help="run id")
    add_service_arguments(parser)


def run(args: argparse.Namespace) -> int:
    latest: dict[str, float] = {}
    status: dict = {}
    try:
        with client_from(args) as client:
            client.run(args.run)  # a run that does not exist is reported before any bar is drawn
            # time left is the engine's (median step and evaluation times), not tqdm's rate since the bar
            # started, which knows nothing of evaluations and, for a finished run, replays at thousands of steps/s
            bar = tqdm(desc=f"run {args.run}", unit="step", dynamic_ncols=True,
                       bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
            left: dict[str, str] = {}

            def show() -> None:
                bar.set_postfix({**left, **{k.replace("/", "_"): f"{v:.4g}" for k, v in latest.items()}}, refresh=True)

            with bar:
                for event, data in client.events(args.run):
                    if event == "status":
                        status = data
                        if data.get("progress_total") and bar.total != data["progress_total"]:
                            bar.total = data["progress_total"]
                        step = data.get("progress_step") or 0
                        bar.update(max(step - bar.n, 0))
                        bar.set_description(f"run {args.run} {data.get('status')}")
                        eta = time_left(data)
                        left = {"left": eta} if eta else {}
                        show()
                    elif event == "metrics":
                        for point in data["points"]:
                            if point["name"] in SHOWN and point["value"] is not None:
                                latest[point["name"]] = point["value"]
                        show()
    except ClientError as exc:
        print(f"slimpipe: {exc}", file=sys.stderr)
        return 1
    final = status.get("status", "unknown")
    print(f"run {args.run} {final}" + (f": {status['error']}" if status.get("error") else ""))
    return 0 if final == names.SUCCEEDED else 1
