"""A short (< 2 min) check of the worker's supervision on CUDA: training children fork from the
preloaded forkserver, so nothing the forkserver imports may initialise CUDA; then a run trains on
the GPU through `Supervisor`, and a child killed with SIGKILL mid-run frees its GPU memory.

    python -m benchmarks.gpu_worker_check                  # on a GPU machine (needs no Celery or broker)
    python -m benchmarks.gpu_worker_check --device cpu     # smoke test anywhere

Seen on one H200 (torch 2.11.0+cu130), 2026-11-26: CUDA not initialised by the preload; tiny_cnn with
top-k 0.5 + 8-bit boundaries trained 40 steps on cuda in forked children, 15.2 s for the first run
(the forkserver's imports included) and 3.7 s for the next, val acc 81.06 % both times; a child
killed with SIGKILL after 37 points was reported as such, kept its 37 points, and left the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def gpu_pids() -> set[int]:
    """Processes holding GPU memory (empty where nvidia-smi cannot see them, e.g. in another pid namespace)."""
    if subprocess.run(["which", "nvidia-smi"], capture_output=True).returncode != 0:
        return set()
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"], capture_output=True, text=True
    ).stdout
    return {int(line) for line in out.split() if line.strip().isdigit()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="slimpipe-gpu-check-"))
    os.environ.update(
        SLIMPIPE_DATABASE_URL=f"sqlite:///{tmp / 'slimpipe.db'}",
        SLIMPIPE_BROKER_DIR=str(tmp / "broker"),
        SLIMPIPE_RUNS_DIR=str(tmp / "runs"),
    )
    import torch

    from backend import crud, db
    from backend.models import Base
    from slimpipe import names
    from slimpipe.spec import dump_spec, expand_sweep
    from worker.supervisor import PRELOAD, Hooks, Supervisor, forkserver_launcher

    report: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    # 1. What the forkserver imports must leave CUDA uninitialised, or forked children cannot use it.
    for module in PRELOAD:
        __import__(module)
    report["cuda_initialised_by_preload"] = torch.cuda.is_initialized()

    Base.metadata.create_all(db.get_engine())
    spec = {
        "name": "gpu-check",
        "model": {"name": "tiny_cnn"},
        "data": {"name": "digits", "batch_size": 64},
        "pipeline": {"balance": 3, "microbatches": 4},
        "compression": {"default": {"forward": {"topk": 0.5, "bits": 8}, "backward": {"topk": 0.5}}},
        "train": {"max_steps": 40, "eval_every": 20, "device": args.device},
    }

    def create(data: dict) -> int:
        with db.session_scope() as session:
            points = [(v, dump_spec(p)) for v, p in expand_sweep(data, None)]
            _, runs = crud.create_experiment(
                session=session, name="gpu", spec=data, sweep=None, tags=[], runs_to_create=points, queue="gpu"
            )
            run_id = runs[0].id
        assert crud.claim_run(run_id, "gpu-check@host", "c")
        return run_id

    launcher = forkserver_launcher()
    # 2. A run trains on the GPU in a forked child (the first start includes the forkserver's imports).
    for attempt in ("cold", "warm"):
        run_id = create(spec)
        t0 = time.monotonic()
        outcome = Supervisor(run_id, Hooks(), launcher=launcher).run()
        with db.session_scope() as session:
            steps, values, _ = crud.read_series(session=session, run_id=run_id, name=names.TRAIN_LOSS)
        report[f"run_{attempt}"] = {
            "status": outcome.status,
            "error": outcome.error,
            "device": (outcome.summary or {}).get("device"),
            "steps": len(steps),
            "first_loss": values[0] if values else None,
            "last_loss": values[-1] if values else None,
            "final_val_acc": (outcome.summary or {}).get("final_val_acc"),
            "wall_s": round(time.monotonic() - t0, 2),
        }

    # 3. SIGKILL mid-run on the GPU: the run fails with the reason and the GPU memory is freed.
    long_id = create({**spec, "train": {**spec["train"], "max_steps": 100_000}})
    supervisor = Supervisor(long_id, Hooks(), launcher=launcher)
    killed: dict = {}

    def kill_when_training() -> None:
        while True:
            with db.session_scope() as session:
                n = len(crud.read_series(session=session, run_id=long_id, name=names.TRAIN_LOSS)[0])
            if n >= 20 and supervisor.pid is not None:
                killed["pid_on_gpu_before"] = supervisor.pid in gpu_pids()
                os.kill(supervisor.pid, signal.SIGKILL)
                killed["points_before"] = n
                return
            time.sleep(0.2)

    threading.Thread(target=kill_when_training, daemon=True).start()
    outcome = supervisor.run()
    time.sleep(1.0)
    with db.session_scope() as session:
        after = len(crud.read_series(session=session, run_id=long_id, name=names.TRAIN_LOSS)[0])
    report["kill9"] = {
        "status": outcome.status,
        "error": outcome.error,
        **killed,
        "points_after": after,
        "pid_on_gpu_after": supervisor.pid in gpu_pids(),
    }
    print(json.dumps(report, indent=2))
    kill9 = report["kill9"]
    ok = (
        not report["cuda_initialised_by_preload"]
        and all(
            report[k]["status"] == names.SUCCEEDED and str(report[k]["device"]).startswith(args.device)
            for k in ("run_cold", "run_warm")
        )
        and kill9["status"] == names.FAILED
        and kill9["points_after"] >= kill9.get("points_before", 1 << 30)
        and not (kill9.get("pid_on_gpu_before") and kill9["pid_on_gpu_after"])
    )
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
