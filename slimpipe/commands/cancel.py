"""`slimpipe cancel RUN [RUN ...]`: stop runs (a queued run at once, a running one at its next step)."""

from __future__ import annotations

import argparse
import sys

from slimpipe.client import ClientError
from slimpipe.commands.remote import add_service_arguments, client_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=int, nargs="+", metavar="RUN", help="run ids")
    add_service_arguments(parser)


def run(args: argparse.Namespace) -> int:
    code = 0
    with client_from(args) as client:
        for run_id in args.runs:
            try:
                run = client.cancel(run_id)
            except ClientError as exc:
                print(f"slimpipe: {exc}", file=sys.stderr)
                code = 1
                continue
            asked = run["status"] == "running"
            print(f"run {run_id} {'asked to stop at its next step' if asked else run['status']}")
    return code
