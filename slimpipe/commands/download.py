"""`slimpipe download RUN WHAT [--out PATH]`: a run's metrics, spec, log or latest checkpoint, to a file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slimpipe.client import ClientError
from slimpipe.commands.remote import add_service_arguments, client_from

#: what -> (the server's path under /runs/{id}/, the default file name for run N)
FILES = {
    "metrics.csv": ("metrics.csv", "run-{}-metrics.csv"),
    "metrics.jsonl": ("metrics.jsonl", "run-{}-metrics.jsonl"),
    "spec": ("spec.yaml", "run-{}-spec.yaml"),
    "log": ("logs", "run-{}.log"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=int, help="run id")
    parser.add_argument("what", choices=[*FILES, "checkpoint"],
                        help="checkpoint: the latest checkpoint's files, unpacked into a folder")
    parser.add_argument("--out", type=Path, help="file (folder for checkpoint); default run-N-… (run-N-checkpoint/)")
    add_service_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        with client_from(args) as client:
            if args.what == "checkpoint":
                for path in client.download_checkpoint(args.run, args.out or f"run-{args.run}-checkpoint"):
                    print(path)
                return 0
            served, default = FILES[args.what]
            out = args.out or Path(default.format(args.run))
            out.write_bytes(client.download(args.run, served))
            print(out)
    except ClientError as exc:
        print(f"slimpipe: {exc}", file=sys.stderr)
        return 1
    return 0
