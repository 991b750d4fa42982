"""`slimpipe delete RUN [RUN ...] [--yes]`: delete runs with their metrics, logs and run folders
(checkpoints included); a queued or running run is cancelled first. Asks first unless --yes."""

from __future__ import annotations

import argparse
import sys

from slimpipe.client import ClientError
from slimpipe.commands.remote import add_service_arguments, client_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=int, nargs="+", metavar="RUN", help="run ids")
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask (needed when stdin is not a terminal)")
    add_service_arguments(parser)


def confirmed(run_ids: list[int]) -> bool:
    listed = ", ".join(map(str, run_ids))
    if not sys.stdin.isatty():
        print(f"slimpipe: deleting runs {listed} cannot be undone; add --yes to delete without a terminal to ask on",
              file=sys.stderr)
        return False
    answer = input(f"delete runs {listed} with their metrics, logs and checkpoints? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def run(args: argparse.Namespace) -> int:
    if not args.yes and not confirmed(args.runs):
        return 1
    code = 0
    with client_from(args) as client:
        for run_id in args.runs:
            try:
                client.delete(run_id)
            except ClientError as exc:
                print(f"slimpipe: {exc}", file=sys.stderr)
                code = 1
                continue
            print(f"run {run_id} deleted")
    return code
