"""`slimpipe submit SPEC [--set path=value ...] [--sweep path=v1,v2 ...] [--sweep-file F] [--queue cpu|gpu] [--wait]`: queue runs on the service."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from slimpipe import names
from slimpipe.client import Client, ClientError
from slimpipe.commands import compare as compare_command
from slimpipe.commands.remote import add_service_arguments, client_from, time_left
from slimpipe.spec import SpecError, apply_settings, load_spec_text


def parse_sweep(items: list[str]) -> dict[str, list[Any]]:
    """`["compression.default.backward.topk=1,0.5"]` → `{"compression.default.backward.topk": [1, 0.5]}`."""
    sweep: dict[str, list[Any]] = {}
    for item in items:
        path, sep, values = item.partition("=")
        if not sep or not path or not values:
            raise SpecError(
                [
                    {
                        "field": "sweep",
                        "message": f"{item!r}: write path=v1,v2, e.g. compression.default.backward.topk=1,0.5",
                    }
                ]
            )
        sweep.setdefault(path.strip(), []).extend(yaml.safe_load(v) for v in values.split(","))
    return sweep


def read_sweep(sweep_file: str | None, items: list[str]) -> dict[str, list[Any]]:
    """A sweep file (YAML: dotted path -> list of values, e.g. examples/*.sweep.yaml) plus `--sweep` items."""
    sweep: dict[str, list[Any]] = {}
    if sweep_file:
        try:
            loaded = yaml.safe_load(Path(sweep_file).read_text())
        except OSError as exc:
            raise SpecError([{"field": "sweep", "message": f"cannot read {sweep_file}: {exc.strerror}"}]) from None
        if not isinstance(loaded, dict) or not all(isinstance(v, list) for v in loaded.values()):
            message = f"{sweep_file} must map dotted paths to lists of values, e.g. compression.default.backward.topk: [1, 0.5]"
            raise SpecError([{"field": "sweep", "message": message}])
        sweep.update(loaded)
    sweep.update(parse_sweep(items))
    return sweep


def wait_with_progress(client: Client, run_ids: list[int], poll_s: float = 1.0, every_s: float = 10.0) -> list[dict]:
    """Poll until every run ends, printing a line when a run changes state and every `every_s` while it trains."""
    shown: dict[int, tuple[str, float]] = {}
    running_since: dict[int, float] = {}  # when this command first saw the run running
    final: dict[int, dict] = {}
    while len(final) < len(run_ids):
        for run_id in run_ids:
            if run_id in final:
                continue
            run = client.run(run_id)
            status, last = run["status"], shown.get(run_id, ("", 0.0))
            if status != last[0] or (status == names.RUNNING and time.monotonic() - last[1] >= every_s):
                step, total = run.get("progress_step"), run.get("progress_total")
                where = f" step {step}/{total} ({100 * step / total:.0f}%)" if step is not None and total else ""
                if status == names.RUNNING and not where:
                    since = running_since.setdefault(run_id, time.monotonic())
                    elapsed = time.monotonic() - since
                    where = ", starting" + (f" (no step finished after {elapsed:.0f} s)" if elapsed >= 1 else "")
                left = time_left(run)
                where += f", {left} left" if left else ""
                reason = f": {run['error']}" if run.get("error") and status in names.FINAL_STATES else ""
                print(f"run {run_id} {status}{where}{reason}", flush=True)
                shown[run_id] = (status, time.monotonic())
            if status in names.FINAL_STATES:
                final[run_id] = run
        if len(final) < len(run_ids):
            time.sleep(poll_s)
    return [final[i] for i in run_ids]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="experiment spec, YAML or JSON")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a field before submitting, e.g. --set pipeline.runner=distributed --set train.max_steps=20",
    )
    parser.add_argument(
        "--sweep", action="append", default=[], metavar="PATH=V1,V2", help="one run per value; repeat for a grid"
    )
    parser.add_argument(
        "--sweep-file",
        metavar="FILE",
        help="a YAML mapping of dotted path -> list of values (e.g. examples/*.sweep.yaml)",
    )
    parser.add_argument("--queue", choices=["cpu", "gpu"], help="default: gpu when train.device is cuda, else cpu")
    parser.add_argument("--tag", action="append", default=[], help="tag the runs (repeatable)")
    parser.add_argument(
        "--wait", action="store_true", help="print each run's progress until every run ends, then the comparison"
    )
    add_service_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        with open(args.spec) as handle:
            spec = apply_settings(load_spec_text(handle.read()), args.set)
    except OSError as exc:
        print(f"slimpipe: cannot read {args.spec}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        with client_from(args) as client:
            sweep = read_sweep(args.sweep_file, args.sweep) or None
            run_ids = client.submit(spec, sweep=sweep, queue=args.queue, tags=args.tag)
            print(f"submitted {len(run_ids)} run{'s' * (len(run_ids) != 1)}: {' '.join(map(str, run_ids))}")
            if not args.wait:
                return 0
            final = wait_with_progress(client, run_ids)
            print(compare_command.render(client.compare(run_ids)))
    except ClientError as exc:
        print(f"slimpipe: {exc}", file=sys.stderr)
        return 1
    return 0 if all(r["status"] == "succeeded" for r in final) else 1
