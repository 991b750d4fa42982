"""The training child: `python -m worker.child RUN_ID OUTCOME_PATH`.

Loads the run's frozen spec from SQL, trains it with `worker.train.run`, reports metrics,
logs and progress through a `Reporter`, and writes how it ended to OUTCOME_PATH as JSON.
A death that leaves no outcome file is explained by the supervisor from the exit status.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from slimpipe import names

RUNS_DIR_ENV = "SLIMPIPE_RUNS_DIR"
#: The training engine module (`run`, `TrainingDiverged`); tests point it at a fault-injecting stand-in.
TRAIN_MODULE_ENV = "SLIMPIPE_TRAIN_MODULE"


def run_dir(run_id: int) -> Path:
    """Where a run's checkpoints and artifacts go: `$SLIMPIPE_RUNS_DIR/run-N` (default ./var/runs)."""
    return Path(os.environ.get(RUNS_DIR_ENV, "./var/runs")).resolve() / f"run-{run_id}"


def _on_sigterm(signum: int, frame: Any) -> None:
    # Unwind through the `finally` below so buffered points reach SQL before the process ends.
    raise SystemExit(128 + signum)


def train_run(run_id: int) -> dict[str, Any]:
    """Train the run and return its outcome as a dict (status, error, traceback, summary)."""
    from backend import crud
    from slimpipe.spec import parse_spec
    from worker.reporter import Reporter

    spec_data = crud.run_spec(run_id)
    if spec_data is None:
        return {"status": names.FAILED, "error": f"run {run_id} no longer exists"}
    try:
        train = importlib.import_module(os.environ.get(TRAIN_MODULE_ENV, "worker.train"))
    except Exception as exc:
        return {
            "status": names.FAILED,
            "error": f"cannot load the training engine: {exc}",
            "traceback": traceback.format_exc(),
        }
    reporter = Reporter(run_id)
    parent = os.getppid()

    def should_stop() -> bool:
        # The worker died (and its pdeathsig did not reach us): stop, nobody is supervising.
        return os.getppid() != parent or reporter.should_stop()

    try:
        spec = parse_spec(spec_data)
        summary = train.run(
            spec,
            on_metrics=reporter.on_metrics,
            on_log=reporter.on_log,
            on_progress=reporter.on_progress,
            should_stop=should_stop,
            out_dir=run_dir(run_id),
        )
        if reporter.cancelled:
            step = "" if reporter.step is None else f" at step {reporter.step}"
            reporter.on_log(f"cancelled{step}")
            return {"status": names.CANCELLED, "error": f"cancelled{step}", "summary": summary}
        return {"status": names.SUCCEEDED, "summary": summary}
    except train.TrainingDiverged as exc:
        reporter.on_log(f"training diverged: {exc}", "ERROR")
        return {"status": names.FAILED, "error": f"training diverged: {exc}", "traceback": traceback.format_exc()}
    except Exception as exc:
        if reporter.cancelled:
            return {"status": names.CANCELLED, "error": f"cancelled ({type(exc).__name__}: {exc})"}
        reporter.on_log(f"{type(exc).__name__}: {exc}", "ERROR")
        return {"status": names.FAILED, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    finally:
        reporter.flush()


def main(argv: list[str] | None = None) -> int:
    import json

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m worker.child RUN_ID OUTCOME_PATH", file=sys.stderr)
        return 2
    run_id, outcome_path = int(args[0]), Path(args[1])
    signal.signal(signal.SIGTERM, _on_sigterm)
    outcome = train_run(run_id)
    tmp = outcome_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(outcome, default=str))
    tmp.replace(outcome_path)  # atomic: the supervisor never reads half a file
    return 0


if __name__ == "__main__":
    sys.exit(main())
