"""A real Celery worker on the embedded setup: SQLite and the filesystem transport, no servers."""

from __future__ import annotations

import pytest

from tests.worker.celery_harness import cluster_env
from tests.worker.celery_scenarios import *  # noqa: F403 - the shared worker behaviour tests

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embedded")
    with cluster_env(tmp, f"sqlite:///{tmp / 'slimpipe.db'}", "filesystem://") as c:
        c.start_worker("cpu1@test", "cpu")
        c.start_worker("gpu1@test", "gpu")
        yield c


@pytest.fixture
def keep_ratios():
    return [1, 0.8, 0.6, 0.5, 0.4]
