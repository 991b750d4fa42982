"""A real Celery worker on the production broker: a throwaway Redis server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from tests.worker.celery_harness import cluster_env
from tests.worker.celery_scenarios import *  # noqa: F403 - the shared worker behaviour tests

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (make system installs it)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("redis-server did not answer PING within 10 s")
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, redis_url):
    tmp = tmp_path_factory.mktemp("redis-cluster")
    with cluster_env(tmp, f"sqlite:///{tmp / 'slimpipe.db'}", redis_url) as c:
        c.start_worker("cpu1@test", "cpu")
        yield c


@pytest.fixture
def keep_ratios():
    return [1, 0.5, 0.4]
