"""`slimpipe runs [--status S] [--experiment ID] [--tag T]`: list runs, newest first."""

from __future__ import annotations

import argparse
import sys

from slimpipe import names
from slimpipe.client import ClientError
from slimpipe.commands.remote import add_service_arguments, client_from, format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", choices=names.RUN_STATES)
    parser.add_argument("--experiment", type=int, help="experiment id")
    parser.add_argument("--tag")
    parser.add_argument("--limit", type=int, default=50)
    add_service_arguments(parser)


def progress(run: dict) -> str:
    if run.get("progress_total"):
        return f"{run.get('progress_step') or 0}/{run['progress_total']}"
    return "-" if run.get("progress_step") is None else str(run["progress_step"])


def run(args: argparse.Namespace) -> int:
    try:
        with client_from(args) as client:
            rows = client.runs(status=args.status, experiment_id=args.experiment, tag=args.tag, limit=args.limit)
    except ClientError as exc:
        print(f"slimpipe: {exc}", file=sys.stderr)
        return 1
    table = [
        [r["id"], r["experiment_id"], r["status"], progress(r), r["queue"], r["attempt"], r["name"], r.get("error")]
        for r in rows
    ]
    print(format_table(["id", "exp", "status", "progress", "queue", "try", "name", "error"], table))
    return 0
