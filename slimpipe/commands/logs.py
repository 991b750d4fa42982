"""`slimpipe logs RUN [--follow]`: print a run's log."""

from __future__ import annotations

import argparse
import sys

from slimpipe.client import Client, ClientError
from slimpipe.commands.remote import add_service_arguments, client_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=int, help="run id")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the run ends")
    add_service_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        with client_from(args) as client:
            return follow(client, args.run) if args.follow else print_log(client, args.run)
    except ClientError as exc:
        print(f"slimpipe: {exc}", file=sys.stderr)
        return 1


def print_log(client: Client, run_id: int) -> int:
    sys.stdout.write(client.logs(run_id))
    return 0


def follow(client: Client, run_id: int) -> int:
    for event, data in client.events(run_id):
        if event == "log":
            for line in data["lines"]:
                print(f"{line['time']} {line['level']} {line['message']}", flush=True)
    return 0

