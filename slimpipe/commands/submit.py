"""`slimpipe submit SPEC [--sweep path=v1,v2 ...] [--queue cpu|gpu] [--wait]`: queue runs on the service."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from slimpipe.client import ClientError
from slimpipe.commands import compare as compare_command
from slimpipe.commands.remote import add_service_arguments, client_from
from slimpipe.spec import SpecError, load_spec_text


def parse_sweep(items: list[str]) -> dict[str, list[Any]]:
    """`["compression.default.backward.topk=1,0.5"]` → `{"compression.default.backward.topk": [1, 0.5]}`."""
    sweep: dict[str, list[Any]] = {}
    for item in items:
        path, sep, values = item.partition("=")
        if not sep or not path or not values:
            raise SpecError([{"field": "sweep", "message": f"{item!r}: write path=v1,v2, e.g. compression.default.backward.topk=1,0.5"}])
        sweep.setdefault(path.strip(), []).extend(yaml.safe_load(v) for v in values.split(","))
    return sweep


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="experiment spec, YAML or JSON")
    parser.add_argument("--sweep", action="append", default=[], metavar="PATH=V1,V2", help="one run per value; repeat for a grid")
    parser.add_argument("--queue", choices=["cpu", "gpu"], help="default: gpu when train.device is cuda, else cpu")
    parser.add_argument("--tag", action="append", default=[], help="tag the runs (repeatable)")
    parser.add_argument("--wait", action="store_true", help="wait for every run to end, then print the comparison")
    add_service_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        with open(args.spec) as handle:
            spec = load_spec_text(handle.read())
    except OSError as exc:
        print(f"slimpipe: cannot read {args.spec}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        with client_from(args) as client:
            run_ids = client.submit(spec, sweep=parse_sweep(args.sweep) or None, queue=args.queue, tags=args.tag)
            print(f"submitted {len(run_ids)} run{'s' * (len(run_ids) != 1)}: {' '.join(map(str, run_ids))}")
            if not args.wait:
                return 0
            final = [client.wait(run_id) for run_id in run_ids]
            print(compare_command.render(client.compare(run_ids)))
    except ClientError as exc:
        print(f"slimpipe: {exc}", file=sys.stderr)
        return 1
    return 0 if all(r["status"] == "succeeded" for r in final) else 1
