"""Throwaway PostgreSQL and Redis servers on free ports, for the tests that are about them.

Fixtures (session-scoped):
- `postgres_server`: a `PostgresServer`; `.new_database()` returns the SQLAlchemy URL of a fresh, empty database.
- `postgres_url`: one fresh database on it for the session.
- `redis_server`: a `RedisServer`; `.url(db)`.
- `redis_url`: `redis://127.0.0.1:<port>/0` on it.

The servers come from the installed binaries (`/usr/lib/postgresql/*/bin`, `redis-server`), run
as the `postgres` user when the tests run as root, and are removed afterwards. Where no binary is
installed the fixture fails with a message saying `make test` installs it; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL_HINT = "`make test` installs it (apt-get install -y postgresql redis-server)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(ready, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout} s: {last}")


# --------------------------------------------------------------------------- PostgreSQL


class PostgresServer:
    """A PostgreSQL server we may create databases on (trust auth, user postgres); a throwaway one can also
    be stopped at once (`crash`, as a failing host or a failover does) and started again on the same port."""

    def __init__(self, host: str, port: int, pg_ctl: list[str] | None = None):
        self.host, self.port = host, port
        self._pg_ctl = pg_ctl  # pg_ctl with its data folder, log and options (throwaway servers only)

    def crash(self) -> None:
        assert self._pg_ctl is not None, "only a throwaway server can be stopped"
        subprocess.run([*self._pg_ctl, "-m", "immediate", "-w", "stop"], check=True, capture_output=True)

    def start(self) -> None:
        assert self._pg_ctl is not None, "only a throwaway server can be started"
        subprocess.run([*self._pg_ctl, "-w", "-t", "60", "start"], check=True, capture_output=True, text=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{database}"

    def _admin(self):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user="postgres", dbname="postgres", autocommit=True)

    def new_database(self, prefix: str = "slimpipe_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_databases(self, prefix: str) -> None:
        with self._admin() as conn:
            rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{prefix}%",)).fetchall()
            for (name,) in rows:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@contextlib.contextmanager
def throwaway_postgres(crash_safe: bool = False) -> Iterator[PostgresServer]:
    """`crash_safe`: a commit is on disk when it returns (synchronous_commit on), so `crash()` loses none;
    off, the last fraction of a second's commits may go with the server (faster for everything else)."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.fail(f"PostgreSQL binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin; {INSTALL_HINT}")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(f"running as root but there is no 'postgres' user to run initdb as; {INSTALL_HINT}")
    root = Path(tempfile.mkdtemp(prefix="slimpipe-pg-"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data, port = root / "data", free_port()
    try:
        subprocess.run(
            _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]),
            check=True,
            capture_output=True,
            text=True,
        )
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit={'on' if crash_safe else 'off'} -c full_page_writes=off -c max_connections=200"
        )
        server = PostgresServer(
            "127.0.0.1", port, _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options])
        )
        server.start()
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"could not start a throwaway PostgreSQL: {exc.stderr or exc.stdout}") from None
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.crash()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with throwaway_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.new_database()


# --------------------------------------------------------------------------- Redis


class RedisServer:
    def __init__(self, port: int, argv: list[str], log: Path):
        self.port, self.argv, self.log = port, argv, log
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        import redis

        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: redis.Redis(port=self.port, socket_timeout=1).ping(), 20, f"redis-server on port {self.port}")

    def crash(self) -> None:
        """kill -9: without persistence, what it held (queued and unacknowledged messages) is gone."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def throwaway_redis() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(f"redis-server not found on PATH; {INSTALL_HINT}")
    root = Path(tempfile.mkdtemp(prefix="slimpipe-redis-"))
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(root)]
    server = RedisServer(port, argv, root / "log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with throwaway_redis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url(0)
