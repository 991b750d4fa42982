"""A stand-in for `worker.train` (SLIMPIPE_TRAIN_MODULE=tests.worker.fake_engine): fast, torch-free, and
misbehaving on demand through the spec's name: "raise", "nan", "hang" (ignores should_stop), "exit".
"""

from __future__ import annotations

import os
import time
from typing import Any


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite."""


def run(spec: Any, *, on_metrics=None, on_log=None, on_progress=None, should_stop=None, out_dir=None,
        resume=False, place_stages=None) -> dict[str, Any]:
    total = spec.train.max_steps
    step = 0
    while step < total:
        if spec.name != "hang" and should_stop is not None and should_stop():
            return {"steps": step, "cancelled": True}
        if spec.name == "hang":
            time.sleep(60)
        step += 1
        if spec.name == "raise" and step == 3:
            raise RuntimeError("the engine broke at step 3")
        if spec.name == "nan" and step == 2:
            raise TrainingDiverged("loss is nan at step 2")
        if spec.name == "exit" and step == 2:
            print("dying without a word", flush=True)
            os._exit(7)
        on_metrics([{"step": step, "name": "train/loss", "value": 1.0 / step}])
        on_log(f"step {step}")
        on_progress(step, total)
        time.sleep(0.01)
    return {"steps": step, "final_val_acc": 50.0}
