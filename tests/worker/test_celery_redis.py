"""A real Celery worker on the production setup: a throwaway Redis broker and PostgreSQL database."""

from __future__ import annotations

import pytest

from tests.worker.celery_harness import cluster_env
from tests.worker.celery_scenarios import *  # noqa: F403 - the shared worker behaviour tests

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, redis_server, postgres_server):
    tmp = tmp_path_factory.mktemp("production")
    # A Redis database of its own (db 5), so other tests' queues on the same server never mix in.
    with cluster_env(tmp, postgres_server.new_database("slimpipe_worker"), redis_server.url(5)) as c:
        c.start_worker("cpu1@test", "cpu")
        c.start_worker("gpu1@test", "gpu")
        yield c


@pytest.fixture
def keep_ratios():
    return [1, 0.5, 0.4]
