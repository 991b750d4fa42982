"""`slimpipe retry RUN [RUN ...] [--wait]`: run failed or cancelled runs again as new attempts; each
continues from its earlier attempt's last checkpoint where the worker holds one (docs/workers.md)."""

from __future__ import annotations

import argparse
import sys

from slimpipe.client import ClientError
from slimpipe.commands.remote import add_service_arguments, client_from
from slimpipe.commands.submit import wait_with_progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=int, nargs="+", metavar="RUN", help="run ids (failed or cancelled)")
    parser.add_argument("--wait", action="store_true", help="print each new run's progress until it ends")
    add_service_arguments(parser)


def run(args: argparse.Namespace) -> int:
    new_ids: list[int] = []
    code = 0
    with client_from(args) as client:
        for run_id in args.runs:
            try:
                new_ids.append(client.retry(run_id)["id"])
            except ClientError as exc:
                print(f"slimpipe: {exc}", file=sys.stderr)
                code = 1
                continue
            print(f"run {run_id} retried as run {new_ids[-1]}")
        if args.wait and new_ids:
            try:
                final = wait_with_progress(client, new_ids)
            except ClientError as exc:
                print(f"slimpipe: {exc}", file=sys.stderr)
                return 1
            code = code or int(any(r["status"] != "succeeded" for r in final))
    return code
