"""`slimpipe runs [--status S] [--experiment ID] [--tag T] [--search TEXT] [--sort KEY]`: list runs, newest first
(`--search` looks in names, tags, notes and specs)."""

from __future__ import annotations

import argparse
import sys

from slimpipe import names
from slimpipe.client import ClientError
from slimpipe.commands.remote import add_service_arguments, client_from, format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", choices=names.RUN_STATES)
    parser.add_argument("--experiment", type=int, help="experiment id")
    parser.add_argument("--tag", help="part of a tag, any case")
    parser.add_argument("--search", metavar="TEXT", help="part of the name, a tag, the notes or the spec, any case (e.g. topk)")
    parser.add_argument(
        "--sort", metavar="KEY", help="id, name, status, created, best_val_acc, wire_bytes_per_step, compression_ratio "
        "or time_per_batch_s; --sort=-KEY for descending (default -id)"
    )  # fmt: skip
    parser.add_argument("--limit", type=int, default=50)
    add_service_arguments(parser)


def progress(run: dict) -> str:
    if run.get("progress_total"):
        return f"{run.get('progress_step') or 0}/{run['progress_total']}"
    return "-" if run.get("progress_step") is None else str(run["progress_step"])


def compression(run: dict) -> list[str]:
    sent = run.get("compression") or {}
    return [sent.get("forward", "-"), sent.get("backward", "-")]


def accuracy(run: dict) -> str:
    best = (run.get("summary") or {}).get("best_val_acc")
    return "-" if best is None else f"{best:.2f}%"


def run(args: argparse.Namespace) -> int:
    try:
        with client_from(args) as client:
            rows = client.runs(
                status=args.status,
                experiment_id=args.experiment,
                tag=args.tag,
                limit=args.limit,
                search=args.search,
                sort=args.sort,
            )
    except ClientError as exc:
        print(f"slimpipe: {exc}", file=sys.stderr)
        return 1
    table = [
        [
            r["id"], r["experiment_id"], r["status"], progress(r), r["name"], *compression(r), accuracy(r),
            ",".join(r.get("tags") or []) or None, r.get("error"),
        ]
        for r in rows
    ]  # fmt: skip
    print(format_table(["id", "exp", "status", "progress", "name", "fwd", "bwd", "best val", "tags", "error"], table))
    return 0
