"""The training child: `python -m worker.child RUN_ID OUTCOME_PATH [SUPERVISOR_PID]`, or `forked_main`.

Loads the run's frozen spec from SQL, trains it with `worker.train.run`, reports metrics,
logs and progress through a `Reporter`, and writes how it ended to OUTCOME_PATH as JSON.
A death that leaves no outcome file is explained by the supervisor from the exit status.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from slimpipe import names

#: The training engine module (`run`, `TrainingDiverged`); tests point it at a fault-injecting stand-in.
TRAIN_MODULE_ENV = "SLIMPIPE_TRAIN_MODULE"


def run_dir(run_id: int) -> Path:
    """Where a run's checkpoints and artifacts go: `$SLIMPIPE_RUNS_DIR/<database id>/run-N` (default
    ./var/runs; backend/runfiles.py)."""
    from backend import runfiles

    return runfiles.run_dir(run_id)


#: After SIGTERM, the child unwinds (flushing its buffers) or is ended this many seconds later.
TERM_GRACE_S = 10.0


def _on_sigterm(signum: int, frame: Any) -> None:
    # Unwind through the `finally` below so buffered points reach SQL before the process ends. Native
    # callbacks (numba's compiler, for one) can swallow the SystemExit, so a timer makes sure.
    timer = threading.Timer(TERM_GRACE_S, os._exit, args=(128 + signum,))
    timer.daemon = True
    timer.start()
    raise SystemExit(128 + signum)


def continue_earlier_attempt(run_id: int, spec: Any, reporter: Any) -> bool:
    """A retry continues from the last checkpoint its earlier attempt left in this host's runs folder
    (`train.checkpoint_every`): the checkpoint files are linked into this run's folder and the earlier
    attempt's metric points up to that step copied here, so the charts run from step 1. Otherwise it
    starts over and its log says why. Returns whether to resume."""
    from backend import crud, db
    from worker.checkpoint import checkpoint_step
    from worker.train import CHECKPOINT

    log = reporter.on_log
    earlier = crud.earlier_attempt(run_id)
    if earlier is None:
        return False
    source, total = earlier
    if spec.pipeline.placement is not None and len(set(spec.pipeline.placement)) > 1:
        log(f"run {source} kept each placed stage's checkpoint on that stage's host; starting from step 0")
        return False
    folder = run_dir(source)
    try:
        step = checkpoint_step(folder / CHECKPOINT)
    except Exception as exc:  # truncated or foreign: a retry that cannot continue still trains
        log(f"run {source}'s checkpoint cannot be read ({type(exc).__name__}: {exc}); starting from step 0", "WARNING")
        return False
    if step is None:
        log(f"run {source} left no checkpoint on this host; starting from step 0 "
            "(with train.checkpoint_every a retry continues from the last checkpoint)")
        return False
    if total is not None and step >= total:
        log(f"run {source}'s checkpoint is of its last step; starting from step 0")
        return False
    here = run_dir(run_id)
    here.mkdir(parents=True, exist_ok=True)
    for path in folder.glob("checkpoint*.pt"):  # the run's, and each stage's for a distributed run
        target = here / path.name
        target.unlink(missing_ok=True)
        try:
            os.link(path, target)  # checkpoints are replaced by rename, never rewritten: a link is safe
        except OSError:
            shutil.copy2(path, target)
    copied = crud.copy_metrics(source, run_id, step)
    with db.session_scope() as session:  # the live summary's best accuracy counts the copied evaluations
        for value in crud.read_series(session=session, run_id=run_id, name=names.VAL_ACC)[1]:
            if value is not None:
                reporter.live.add(names.VAL_ACC, value)
    log(f"continuing run {source} from its checkpoint at step {step} ({copied} metric points up to it copied)")
    return True


def set_aside_leftovers(run_id: int, log: Any) -> None:
    """A run's folder is empty when the run starts; files already there belong to an earlier run of the same
    number (a database restored from a backup, or SQLite giving a deleted newest run's id to the next run).
    They are renamed aside: never served or resumed as this run's, and never deleted."""
    here = run_dir(run_id)
    if not here.is_dir() or not any(here.iterdir()):
        return
    aside = here.with_name(f"{here.name}.leftover-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}")
    here.rename(aside)
    log(f"moved the files an earlier run numbered {run_id} left in this host's runs folder to {aside}", "WARNING")


def train_run(run_id: int) -> dict[str, Any]:
    """Train the run and return its outcome as a dict (status, error, traceback, summary)."""
    from backend import crud
    from backend.settings import get_settings
    from slimpipe.datapaths import confined_spec
    from slimpipe.spec import parse_spec
    from worker.reporter import DatabaseUnreachable, Reporter

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
    should_stop = reporter.should_stop

    def place_stages(queue: str, ranks: list[int], world: int, host: str, port: int) -> None:
        from backend.queue import send_stages

        send_stages(run_id, queue, ranks, world, host, port)

    try:
        # The API confined the spec's paths when it took the run; check again here, where files are opened,
        # and hand the engine the resolved places (relative paths count from the data root, not from here).
        spec = confined_spec(parse_spec(spec_data), get_settings().data_root)
        set_aside_leftovers(run_id, reporter.on_log)
        resume = continue_earlier_attempt(run_id, spec, reporter)
        summary = train.run(
            spec,
            on_metrics=reporter.on_metrics,
            on_log=reporter.on_log,
            on_progress=reporter.on_progress,
            should_stop=should_stop,
            out_dir=run_dir(run_id),
            resume=resume,
            place_stages=place_stages,
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
        try:  # the metrics and logs still held wait for a database that is down for a while
            reporter.close(get_settings().database_outage_s)
        except DatabaseUnreachable as exc:
            print(f"slimpipe: {exc}", file=sys.stderr)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[-1][:1] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False
    except (PermissionError, OSError):
        return True


def _watch_supervisor(pid: int, interval_s: float = 0.5) -> None:
    """End this child (through the SIGTERM handler, so buffers flush) once the supervising worker is gone.

    Also PR_SET_PDEATHSIG on Linux; the thread covers a forkserver parent and other platforms.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    def watch() -> None:
        while _alive(pid):
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="slimpipe-watch-supervisor", daemon=True).start()


def forked_main(run_id: int, outcome_path: str, output_path: str, supervisor_pid: int) -> None:
    """Entry of a child forked from the forkserver: own session, output to a file, then `main`."""
    os.setsid()  # a process group of its own: the supervisor stops it and whatever it started at once
    # The forkserver hands every child its "alive" pipe; holding it would keep the forkserver (and
    # so this child, through pdeathsig) alive after the worker died. Training never forks from it.
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if alive_fd is not None:
        with contextlib.suppress(OSError):
            os.close(alive_fd)
        server._forkserver_alive_fd = None  # type: ignore[union-attr]
    fd = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    raise SystemExit(main([str(run_id), outcome_path, str(supervisor_pid)]))


def main(argv: list[str] | None = None) -> int:
    import json

    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print("usage: python -m worker.child RUN_ID OUTCOME_PATH [SUPERVISOR_PID]", file=sys.stderr)
        return 2
    run_id, outcome_path = int(args[0]), Path(args[1])
    supervisor = int(args[2]) if len(args) == 3 else os.getppid()
    signal.signal(signal.SIGTERM, _on_sigterm)
    _watch_supervisor(supervisor)
    from worker.memory import keep_freed_memory

    keep_freed_memory()  # this process only trains: reuse freed tensors instead of page-faulting new ones
    outcome = train_run(run_id)
    tmp = outcome_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(outcome, default=str))
    tmp.replace(outcome_path)  # atomic: the supervisor never reads half a file
    return 0


if __name__ == "__main__":
    sys.exit(main())
