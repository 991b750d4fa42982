"""Host memory of each process of a distributed run: peak and last resident set size per rank.

Runs `slimpipe train SPEC` (runner distributed) in a child and samples /proc every 0.1 s: rank 0 is that
child, rank k the `worker.stage` process whose argv names k. Run it with PYTHONPATH pointing at another
checkout to compare two trees on the same spec.

    python -m benchmarks.stage_memory benchmarks/roberta_base_config.yaml
    python -m benchmarks.stage_memory examples/minilm_5stage_offline.yaml --set train.max_steps=12
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) in MiB, or None once the process is gone."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    except (FileNotFoundError, ProcessLookupError):
        return None
    if "VmRSS" not in fields:  # a zombie: exited, not yet reaped
        return None
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _stage_ranks(parent: int) -> dict[int, int]:
    """pid -> rank of the worker.stage children of `parent`."""
    ranks = {}
    children = Path(f"/proc/{parent}/task/{parent}/children")
    try:
        pids = [int(p) for p in children.read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return ranks
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"worker.stage" in argv:
            ranks[pid] = int(argv[argv.index(b"worker.stage") + 2])
    return ranks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")
    parser.add_argument("--label", default="", help="a name for this tree in the table's title")
    args = parser.parse_args(argv)
    sets = [arg for item in ["pipeline.runner=distributed", *args.set] for arg in ("--set", item)]
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "slimpipe", "train", args.spec, "--out", out, *sets]
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ranks: dict[int, int] = {}
        seen: dict[int, tuple[float, float]] = {}  # rank -> (last RSS, peak)
        while child.poll() is None:
            ranks.update(_stage_ranks(child.pid))
            for pid, rank in [(child.pid, 0), *ranks.items()]:
                if (mb := _status_mb(pid)) is not None:
                    seen[rank] = mb
            time.sleep(0.1)
        output = child.stdout.read() if child.stdout else ""
    if child.returncode:
        print(output, file=sys.stderr)
        return child.returncode
    ready = next((line for line in output.splitlines() if "stage processes ready" in line), "")
    print(f"host memory per process{f' ({args.label})' if args.label else ''}: {args.spec} {' '.join(args.set)}")
    print(f"{'rank':>4}  {'peak MiB':>9}  {'last MiB':>9}")
    for rank in sorted(seen):
        last, peak = seen[rank]
        print(f"{rank:>4}  {peak:9.0f}  {last:9.0f}")
    print(f"{'all':>4}  {sum(p for _, p in seen.values()):9.0f}  {sum(r for r, _ in seen.values()):9.0f}")
    if ready:
        print(ready.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
