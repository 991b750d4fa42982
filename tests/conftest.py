import os
import random
import tempfile

import pytest

pytest_plugins = ["tests.fixtures_servers"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Run folders (DELETE /runs/{id} removes them) never default to ./var/runs, a developer's own, in tests.
os.environ["SLIMPIPE_RUNS_DIR"] = tempfile.mkdtemp(prefix="slimpipe-test-runs-")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    random.seed(0)
    try:
        import numpy as np

        np.random.seed(0)
    except ImportError:
        pass
    if "torch" in __import__("sys").modules:
        import torch

        torch.manual_seed(0)
