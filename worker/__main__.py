"""`python -m worker [--queues cpu,gpu] [--name NAME]`: one Celery worker, one run at a time.

Queues default to `SLIMPIPE_WORKER_QUEUES` (default `cpu`); the broker and database come from
`SLIMPIPE_BROKER_URL` / `SLIMPIPE_DATABASE_URL` like the API's. Each run trains in a child
process, so the worker itself uses Celery's solo pool.
"""

from __future__ import annotations

import argparse
import sys

from slimpipe import names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--queues", "-Q", help="comma-separated queues to consume (default: $SLIMPIPE_WORKER_QUEUES or cpu)"
    )
    parser.add_argument("--name", "-n", help="Celery node name, unique per worker (default: QUEUES@%%h)")
    parser.add_argument("--loglevel", "-l", default="INFO")
    return parser


def celery_argv(queues: list[str], name: str, loglevel: str) -> list[str]:
    return [
        "worker",
        "--queues",
        ",".join(queues),
        "--hostname",
        name,
        "--pool",
        "solo",
        "--concurrency",
        "1",
        "--loglevel",
        loglevel,
        # No broadcast chatter: runs are coordinated through SQL, not through worker events.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def main(argv: list[str] | None = None) -> int:
    from backend.settings import get_settings

    args = build_parser().parse_args(argv)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else get_settings().queues
    unknown = [q for q in queues if q not in names.QUEUES]
    if unknown or not queues:
        print(
            f"python -m worker: unknown queue {', '.join(unknown) or '(none)'}; choose from {', '.join(names.QUEUES)}",
            file=sys.stderr,
        )
        return 2
    name = args.name or f"{'-'.join(queues)}@%h"

    from worker.celery_app import app

    app.worker_main(celery_argv(queues, name, args.loglevel))
    return 0


if __name__ == "__main__":
    sys.exit(main())
