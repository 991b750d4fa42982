"""The `slimpipe` command line: a thin dispatcher; each verb lives with the code it drives.

A verb module defines `add_arguments(parser)` and `run(args) -> int`, and keeps heavy imports
(torch, the server) inside `run` so `slimpipe --help` stays fast and torch-free.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pydantic import ValidationError

from slimpipe.spec import SpecError

VERBS = {
    "train": ("worker.train_cli", "train a spec locally, no service"),
    "serve": ("backend.serve", "start the API, the dashboard and one worker"),
    "submit": ("slimpipe.commands.submit", "submit a spec (and a sweep) to the service"),
    "runs": ("slimpipe.commands.runs", "list runs"),
    "watch": ("slimpipe.commands.watch", "follow a run's progress"),
    "logs": ("slimpipe.commands.logs", "print a run's log"),
    "download": ("slimpipe.commands.download", "save a run's metrics, spec, log or latest checkpoint"),
    "cancel": ("slimpipe.commands.cancel", "stop runs"),
    "retry": ("slimpipe.commands.retry", "run failed or cancelled runs again, from their last checkpoint"),
    "edit": ("slimpipe.commands.edit", "change runs' tags and notes"),
    "delete": ("slimpipe.commands.delete", "delete runs with their metrics, logs and checkpoints"),
    "compare": ("slimpipe.commands.compare", "compare runs: accuracy, bandwidth, speed-up"),
}
BENCHES = {
    "codecs": ("benchmarks.codecs", "codec ratio, error and GB/s against torch/zstd baselines"),
    "pipeline": ("benchmarks.pipeline", "engine overhead and modelled link time; --runner distributed: measured"),
    "ingest": ("benchmarks.ingest", "metric ingest and read-back against MLflow"),
    "dashboard": ("benchmarks.dashboard", "page interactive times in headless Chromium"),
    "threads": ("benchmarks.threads", "CPU time per step: worker's forked training child vs slimpipe train"),
}


def _add(sub: argparse._SubParsersAction, name: str, module: str, help: str) -> None:
    parser = sub.add_parser(name, help=help, description=help)
    mod = importlib.import_module(module)
    mod.add_arguments(parser)
    parser.set_defaults(_run=mod.run)


DESCRIPTION = """\
Train models cut into pipeline stages, with compressed stage boundaries, and compare runs.

Train a spec on this machine with `train`, or run the service (`serve`) and send it work with
`submit`; then follow runs with `runs`, `watch` and `logs`, and put them side by side with `compare`.
The commands that talk to the service use http://127.0.0.1:8000 unless --url or SLIMPIPE_URL say
otherwise."""

EXAMPLES = """\
examples:
  slimpipe train examples/digits_cnn_topk.yaml                 train locally, no service
  slimpipe train examples/digits_cnn_topk.yaml --set train.max_steps=50
  slimpipe serve --port 8001                                   API + dashboard + one worker
  slimpipe submit examples/digits_cnn_topk.yaml --wait         queue one run, follow it
  slimpipe submit SPEC --set pipeline.runner=distributed       one process per stage
  slimpipe submit examples/roberta_rte.yaml --sweep-file examples/roberta_rte.sweep.yaml
  slimpipe submit SPEC --sweep compression.default.backward.topk=1,0.5,0.1 --tag study-1
  slimpipe runs --status running                               what is training now
  slimpipe watch 3                                             progress of run 3
  slimpipe cancel 3; slimpipe retry 3 --wait                   stop run 3, then continue it as a new run
  slimpipe download 3 checkpoint --out mnv2/                   run 3's latest checkpoint files
  slimpipe edit 3 --tag paper --notes "collapses at keep 0.5"   tag run 3 and note why
  slimpipe delete 3 4 --yes                                    runs 3 and 4, their metrics and checkpoints
  slimpipe compare 3 4 5                                       accuracy, bytes, speed-up
  slimpipe bench codecs                                        codec speed and ratio

`slimpipe VERB --help` lists a verb's options. docs/guide.md explains specs and compression."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slimpipe",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (module, help) in VERBS.items():
        _add(sub, name, module, help)
    bench = sub.add_parser("bench", help="run a benchmark and print its table")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, (module, help) in BENCHES.items():
        _add(bench_sub, name, module, help)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except SpecError as exc:
        for error in exc.errors:
            print(f"slimpipe: {error['field']}: {error['message']}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        for detail in exc.errors():  # the service's settings: one line per SLIMPIPE_* variable, not a traceback
            variable = "SLIMPIPE_" + "_".join(map(str, detail["loc"])).upper()
            print(f"slimpipe: {variable}={detail['input']!r}: {detail['msg']}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `slimpipe runs | head`: the reader is gone; stop quietly as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not raise again
        return 128 + 13  # SIGPIPE
