"""What the REST verbs share: `--url`/`--token`, a client from them, and a plain-text table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from slimpipe import names
from slimpipe.client import Client


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the slimpipe service (default $SLIMPIPE_URL or http://127.0.0.1:8000)")
    parser.add_argument("--token", help="API token (default $SLIMPIPE_API_TOKEN)")


def client_from(args: argparse.Namespace) -> Client:
    return Client(url=args.url, token=args.token, on_wait=lambda message: print(f"slimpipe: {message}", file=sys.stderr))


def time_left(run: dict[str, Any]) -> str | None:
    """A running run's ETA as "mm:ss" (the engine's: median step and evaluation times, summary.eta_s), else None."""
    eta = (run.get("summary") or {}).get(names.SUMMARY_ETA_S)
    if run.get("status") != names.RUNNING or not isinstance(eta, int | float):
        return None
    seconds = max(0, round(eta))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    texts = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in texts)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in texts]
    return "\n".join(line.rstrip() for line in lines)
