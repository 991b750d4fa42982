"""`slimpipe compare RUN...`: accuracy, bytes on the wire and speed-up side by side."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from slimpipe.client import ClientError
from slimpipe.commands.remote import add_service_arguments, client_from, format_table
from slimpipe.timeline import SPEEDUP_TEXT

FIGURES = [
    ("best_val_acc", "best val%"),
    ("final_val_acc", "final val%"),
    ("delta_val_acc", "Δ val"),
    ("wire_bytes_per_step", "wire kB/step"),
    ("compression_ratio", "ratio"),
    ("time_per_batch_s", "s/batch"),
    ("modelled_time_per_batch_s", "modelled s/batch"),
    ("link_time_per_step_s", "link s/step"),
    ("speedup", "speed-up"),
]


def _kilo(value: float | None) -> float | None:
    return None if value is None else round(value / 1e3, 1)


def render(table: dict[str, Any]) -> str:
    """The compare answer as a text table: one row per run, the varying spec fields, then the figures."""
    varying = table["varying_fields"]
    headers = ["run", "status", *(path.split(".", 2)[-1] if path.count(".") > 1 else path for path in varying)]
    headers += [label for _, label in FIGURES]
    rows = []
    for row in table["runs"]:
        mark = "*" if row["run_id"] == table.get("baseline_run_id") else ""
        figures = {**row, "wire_bytes_per_step": _kilo(row.get("wire_bytes_per_step"))}
        values = [row["differences"].get(p) for p in varying] + [figures.get(key) for key, _ in FIGURES]
        rows.append([f"{row['run_id']}{mark}", row["status"], *values])
    text = format_table(headers, rows) + f"\n{SPEEDUP_TEXT}"
    if table.get("baseline_run_id") is not None:
        text += f"\n* baseline (uncompressed): run {table['baseline_run_id']}"
    for row in table["runs"]:  # the researcher's notes, a line each (the first line of them)
        if row.get("notes"):
            text += f"\nrun {row['run_id']}: {row['notes'].splitlines()[0]}"
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=int, nargs="+", metavar="RUN", help="run ids")
    parser.add_argument("--baseline", type=int, help="run to measure speed-up and Δ accuracy against")
    parser.add_argument("--json", action="store_true", help="print the server's JSON instead of a table")
    add_service_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        with client_from(args) as client:
            table = client.compare(args.runs, baseline=args.baseline)
    except ClientError as exc:
        print(f"slimpipe: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(table, indent=2) if args.json else render(table))
    return 0
