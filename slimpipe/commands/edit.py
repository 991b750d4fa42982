"""`slimpipe edit RUN [RUN ...] [--tag T] [--untag T] [--notes TEXT | --notes-file FILE]`: change runs' tags
and notes, in any state (the dashboard's run page does the same)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slimpipe.client import ClientError
from slimpipe.commands.remote import add_service_arguments, client_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=int, nargs="+", metavar="RUN", help="run ids")
    parser.add_argument("--tag", action="append", default=[], metavar="T", help="add a tag (repeat for more)")
    parser.add_argument("--untag", action="append", default=[], metavar="T", help="remove a tag (repeat for more)")
    notes = parser.add_mutually_exclusive_group()
    notes.add_argument("--notes", metavar="TEXT", help='replace the notes ("" clears them)')
    notes.add_argument("--notes-file", type=Path, metavar="FILE", help="replace the notes with a file's text (- for stdin)")
    add_service_arguments(parser)


def _notes(args: argparse.Namespace) -> str | None:
    if args.notes_file is None:
        return args.notes
    return sys.stdin.read() if str(args.notes_file) == "-" else args.notes_file.read_text()


def run(args: argparse.Namespace) -> int:
    if not (args.tag or args.untag or args.notes is not None or args.notes_file is not None):
        print("slimpipe edit: nothing to change; give --tag, --untag, --notes or --notes-file", file=sys.stderr)
        return 2
    try:
        notes = _notes(args)
    except OSError as exc:
        print(f"slimpipe edit: cannot read --notes-file: {exc}", file=sys.stderr)
        return 2
    code = 0
    with client_from(args) as client:
        for run_id in args.runs:
            try:
                run = client.update_run(run_id, notes=notes, add_tags=args.tag, remove_tags=args.untag)
            except ClientError as exc:
                print(f"slimpipe: {exc}", file=sys.stderr)
                code = 1
                continue
            shown = ", ".join(run["tags"]) or "none"
            print(f"run {run_id}: tags {shown}; notes {'set' if run.get('notes') else 'none'}")
    return code
