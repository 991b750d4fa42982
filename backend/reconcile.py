"""Queue reconciliation: a run still `queued` whose message the broker no longer holds is sent again.

A broker can lose messages: Redis restarted from an older snapshot (or without persistence), a wiped
embedded queue folder, a worker killed between taking a message and claiming its run. SQL says which
runs wait; the broker says which messages wait; the difference, once older than
SLIMPIPE_REQUEUE_AFTER_S, is re-sent. Sending twice is harmless: the worker's atomic claim
(`crud.claim_run`) runs a run once and skips every later copy.

`LostRuns` is the other half: a `running` run whose worker stopped heartbeating is failed "worker lost".
"""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from backend import crud, db
from backend.models import LogLine, Run, utcnow
from backend.queue import send_run
from backend.settings import Settings
from slimpipe import names

log = logging.getLogger(__name__)
RESENT_PREFIX = "re-sent to queue"
# kombu's Redis transport keeps priorities 3, 6, 9 in lists named queue + this separator + priority.
REDIS_PRIORITY_SEP = "\x06\x16"


def _run_id_of(message: dict[str, Any]) -> int | None:
    """The run id of a Celery `run_experiment` message (kombu's JSON envelope), else None."""
    try:
        if message["headers"]["task"] != names.TASK_RUN_EXPERIMENT:
            return None
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        return int(args[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def waiting_in_embedded_broker(broker_dir: Path) -> set[int]:
    """Run ids of the messages waiting in the filesystem transport's queue folder."""
    found = set()
    for path in (broker_dir / "queue").glob("*.msg"):
        try:
            run_id = _run_id_of(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # taken by a worker meanwhile, or not ours
        if run_id is not None:
            found.add(run_id)
    return found


def waiting_in_redis(url: str) -> set[int]:
    """Run ids of the messages in the queue lists, and of those a worker took but has not acknowledged."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        raw: list[Any] = []
        for queue in names.QUEUES:
            for key in [queue, *(f"{queue}{REDIS_PRIORITY_SEP}{p}" for p in (3, 6, 9))]:
                raw += client.lrange(key, 0, -1)
        envelopes = [json.loads(m) for m in raw]
        envelopes += [json.loads(v)[0] for v in client.hvals("unacked")]
    finally:
        client.close()
    return {run_id for m in envelopes if (run_id := _run_id_of(m)) is not None}


def waiting_run_ids(settings: Settings) -> set[int]:
    if settings.is_embedded_broker:
        return waiting_in_embedded_broker(settings.broker_dir.resolve())
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return waiting_in_redis(settings.broker_url)
    raise ValueError(f"cannot inspect broker {settings.broker_url}; use redis:// or the embedded broker")


def stale_queued_runs(settings: Settings, older_than_s: float) -> list[tuple[int, str]]:
    """(run id, queue) of runs queued, never claimed, and neither created nor re-sent in the last `older_than_s`."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    with db.session_scope(settings.database_url) as session:
        queued = list(
            session.execute(
                select(Run.id, Run.queue)
                .where(Run.status == names.QUEUED, Run.cancel_requested.is_(False), Run.created_at <= cutoff)
                .order_by(Run.id)
            )
        )
        if not queued:
            return []
        # Only these runs' log lines (indexed by run_id): when was each last re-sent, if ever?
        resent_at = dict(
            session.execute(
                select(LogLine.run_id, func.max(LogLine.time))
                .where(LogLine.run_id.in_([r for r, _ in queued]), LogLine.message.like(f"{RESENT_PREFIX}%"))
                .group_by(LogLine.run_id)
            ).all()
        )
    return [(run_id, queue) for run_id, queue in queued if run_id not in resent_at or _aware(resent_at[run_id]) <= cutoff]


def _aware(at: Any) -> Any:
    from datetime import UTC

    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def resend_lost_runs(settings: Settings, older_than_s: float | None = None) -> list[int]:
    """Re-send the stale queued runs whose message the broker does not hold; each gets a line in its log."""
    older_than_s = settings.requeue_after_s if older_than_s is None else older_than_s
    stale = stale_queued_runs(settings, older_than_s)
    if not stale:
        return []
    waiting = waiting_run_ids(settings)
    resent = []
    for run_id, queue in stale:
        if run_id in waiting:
            continue  # still in line behind other runs: nothing was lost
        send_run(run_id, queue, settings)
        with db.session_scope(settings.database_url) as session:
            crud.insert_logs(
                session=session,
                run_id=run_id,
                lines=[
                    (
                        "WARNING",
                        f"{RESENT_PREFIX} {queue}: still queued after {older_than_s:g} s and the broker held no "
                        "message for it (lost in a broker restart?)",
                    )
                ],
            )
        resent.append(run_id)
    if resent:
        log.warning("re-sent runs %s whose broker messages were lost", resent)
    return resent


class LostRuns:
    """`crud.mark_lost_runs` for a sweeper that calls it now and then, except within `timeout_s` of this
    process's own last failure to reach the database: while the database was away, workers could not write
    heartbeats either, and a run that trained through the outage must not be failed for that.

    A sweeper that runs at least every `timeout_s` / 2 has met any outage longer than `timeout_s`."""

    def __init__(self, timeout_s: float, clock: Any = time.monotonic):
        self.timeout_s, self.clock = timeout_s, clock
        self.unreachable_at: float | None = None

    def sweep(self) -> list[int]:
        if self.unreachable_at is not None and self.clock() - self.unreachable_at < self.timeout_s:
            return []
        return crud.mark_lost_runs(self.timeout_s)

    def failed(self, exc: BaseException) -> None:
        """Anything this sweeper did raised `exc`: note an unreachable database."""
        if db.unreachable(exc):
            self.unreachable_at = self.clock()
