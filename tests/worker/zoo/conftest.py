import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs torch on one thread (see tests/worker/conftest.py)."""
