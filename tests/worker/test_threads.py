"""A run costs the same CPU time per step in a real worker's forked training child as in `slimpipe train`;
the worker publishes what it can build when it starts.

The child forks from a forkserver that imported torch and numba; numba's OpenMP pool, started again in
each child, used to reset torch to one thread per core after the spec's `threads: 1` was applied, and
the child spun in libgomp. CPU time (the summaries' `time_per_batch_s` on a CPU device), not wall time,
so other load on the machine does not decide the outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from slimpipe import names
from tests.worker.celery_harness import ROOT, cluster_env, wait_for

pytestmark = pytest.mark.slow

#: The README's digits example (3-stage CNN, GPipe, top-k 0.5 both ways, threads: 1), 16 steps.
SPEC = {
    **yaml.safe_load((ROOT / "examples" / "digits_cnn_topk.yaml").read_text()),
    "train": {"max_steps": 16, "eval_every": 1000, "seed": 0, "threads": 1, "device": "cpu"},
}


def published_tree():
    from backend import crud, db

    with db.session_scope() as session:
        return crud.model_trees(session=session).get("tiny_cnn")


def test_worker_child_costs_the_same_cpu_time_per_step_as_slimpipe_train(tmp_path):
    assert SPEC["train"]["threads"] == 1
    with cluster_env(tmp_path, f"sqlite:///{tmp_path / 'slimpipe.db'}", "filesystem://") as cluster:
        for env in (cluster.env, os.environ):
            env.pop("OMP_NUM_THREADS", None)  # the spec alone must set the threads, as in a real deployment
        cluster.start_worker("cpu1@test", "cpu")
        (run_id,) = cluster.submit(SPEC)
        run = cluster.wait_final(run_id, timeout=240)
        assert run.status == names.SUCCEEDED, run.error
        service = run.summary
        # The worker also published what it can build when it started (worker/catalog.py).
        trees = wait_for(published_tree, 120, "the worker's catalog to list tiny_cnn")
        assert [name for name, _ in trees["children"]][:3] == ["conv1", "bn1", "act1"]

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT)
    local = subprocess.run(
        [sys.executable, "-m", "slimpipe", "train", str(spec_file), "--out", str(tmp_path / "local"), "--no-progress"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert local.returncode == 0, local.stderr
    mine = json.loads((tmp_path / "local" / "summary.json").read_text())

    assert service["time_clock"] == mine["time_clock"] == "cpu"
    ratio = service["time_per_batch_s"] / mine["time_per_batch_s"]
    # The thread bug made it 7.8x. CPU time is not free of load either: alone this ratio ran 0.76-1.07 on a
    # 2-core VM (four runs), and 1.56 once beside the rest of the suite; 2.5x keeps both apart.
    assert 1 / 2.5 <= ratio <= 2.5, (
        f"CPU s per step: worker child {service['time_per_batch_s']:.4f}, slimpipe train {mine['time_per_batch_s']:.4f}"
    )
