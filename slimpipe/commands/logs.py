"""`slimpipe logs RUN [--follow]`: print a run's log."""

from __future__ import annotations

import argparse
import sys

from slimpipe.client import ClientError
from slimpipe.commands.remote import add_service_arguments, client_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=int, help="run id")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the run ends")
    add_service_arguments(parser)


def run(args: argparse.Namespace) -> int:
    client = client_from(args)
    try:
        if not args.follow:
            sys.stdout.write(client.logs(args.run))
            return 0
        for event, data in client.events(args.run):
            if event == "log":
                for line in data["lines"]:
                    print(f"{line['time']} {line['level']} {line['message']}", flush=True)
    except ClientError as exc:
        print(f"slimpipe: {exc}", file=sys.stderr)
        return 1
    return 0
