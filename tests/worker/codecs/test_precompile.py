"""`python -m worker.codecs.precompile` leaves nothing for a training process to compile.

Each check runs in a fresh interpreter: numba's counters are per process, and the point is what a new
stage or training process finds in the on-disk cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

TRAIN_EVERY_CODEC_PATH = textwrap.dedent(
    """
    import json
    from worker import train
    from worker.codecs.precompile import compiled_here

    TEXT = {"config": {"model_type": "bert", "vocab_size": 500, "hidden_size": 16, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 40}}
    compressions = [
        {"preset": "balanced"}, {"preset": "aggressive"}, {"preset": "extreme"},
        {"default": {"forward": {"topk": 0.1, "bits": 4}, "backward": {"topk": 0.5, "topk_mode": "random"}}},
        {"default": {"forward": {"topk": 0.2, "bits": 6, "feedback": "delta"}, "backward": {"dtype": "bf16"}}},
        {"default": {"forward": {"bits": 2, "warmup": "ramp", "warmup_steps": 2}, "backward": {"bits": 5, "scale": "tensor"}}},
    ]
    compiled = {}
    for k, compression in enumerate(compressions):
        for model, data in (({"name": "tiny_cnn"}, {"name": "digits", "batch_size": 16}),
                            ({"name": "hf_classifier", "options": TEXT},
                             {"name": "synthetic_text", "options": {"n_train": 32, "n_val": 8}, "batch_size": 8,
                              "max_length": 16})):
            train.run({"model": model, "data": data, "compression": compression,
                       "pipeline": {"microbatches": 2}, "train": {"max_steps": 3, "eval_every": 3, "threads": 1}})
            compiled[f"{k}-{model['name']}"] = compiled_here()
    print(json.dumps(compiled))
    """
)


def python(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_after_precompile_training_compiles_no_codec_kernel():
    first = python("-m", "worker.codecs.precompile")  # compiles only what the cache lacks
    assert "336 round trips" in first
    second = python("-m", "worker.codecs.precompile")
    assert "336 round trips, 0 signatures compiled" in second, second
    compiled = json.loads(python("-c", TRAIN_EVERY_CODEC_PATH).splitlines()[-1])
    assert len(compiled) == 12
    assert set(compiled.values()) == {0}, compiled


@pytest.mark.slow
def test_the_counter_sees_compiles_into_an_empty_cache(tmp_path):
    """With an empty cache (NUMBA_CACHE_DIR) the first process compiles what a 3-bit encode needs, the next none."""
    script = textwrap.dedent(
        """
        import numpy as np, torch
        from slimpipe.spec import CompressionSpec
        from worker.codecs import chain
        from worker.codecs.precompile import compiled_here

        spec = CompressionSpec(bits=3, scale="block", block=64)
        chain.decode(chain.encode(torch.randn(256), spec, backend="numba", rng=np.random.default_rng(0)), backend="numba")
        print(compiled_here())
        """
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:]
    first, second = (int(r.stdout.split()[-1]) for r in runs)
    assert first >= 2 and second == 0
