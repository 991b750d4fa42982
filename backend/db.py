"""Engines and sessions for SQLite (WAL, busy timeout) and PostgreSQL, and `migrate()` to the newest schema."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from backend.settings import get_settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30
# A PostgreSQL host that does not answer (down, or cut off) fails a connection attempt after this long,
# rather than after the operating system's TCP timeout of minutes (a training step waits on it).
CONNECT_TIMEOUT_S = 5
T = TypeVar("T")

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the API read while a worker writes; busy_timeout makes a second writer wait instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """A new engine for `url` (`kwargs` go to `create_engine`); SQLite files get their folder and the pragmas above."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
            pool_pre_ping=True,
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if "poolclass" not in kwargs:
        kwargs.update(pool_size=10, max_overflow=20)
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("connect_args", {"connect_timeout": CONNECT_TIMEOUT_S})
    return create_engine(url, pool_pre_ping=True, **kwargs)


def get_engine(url: str | None = None) -> Engine:
    """One shared engine per database URL (the settings' URL by default)."""
    url = url or get_settings().database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests, and a forked child before it opens its own)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached or dropped the connection (a restart, a
    failover, a network cut, SQLite's lock held too long): worth trying again later, unlike a wrong query."""
    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def when_reachable(
    fn: Callable[[], T],
    patience_s: float,
    sleep: Callable[[float], None] = time.sleep,
    on_wait: Callable[[Exception], None] | None = None,
) -> T:
    """`fn()`, tried again while the database is unreachable (0.5 s between tries, doubling up to 5 s) for
    up to `patience_s`; then, or on any other error, the error is raised. `on_wait(error)` before the first wait."""
    deadline = time.monotonic() + patience_s
    pause = 0.5
    while True:
        try:
            return fn()
        except Exception as exc:
            if not unreachable(exc) or time.monotonic() + pause > deadline:
                raise
            if on_wait is not None and pause == 0.5:
                on_wait(exc)
        sleep(pause)
        pause = min(2 * pause, 5.0)


def first_line(exc: BaseException) -> str:
    """A driver error's message without SQLAlchemy's statement and background link."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def shown_url(url: str) -> str:
    """`url` with any password masked, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str | None = None):
    from alembic.config import Config

    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    return config


def migrate(url: str | None = None) -> None:
    """`alembic upgrade head` on `url` (the settings' database by default); safe to call on every start."""
    from alembic import command

    url = url or get_settings().database_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")
