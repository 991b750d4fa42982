"""Data access: keyword-only functions over a session, and the worker's calls that open their own.

The worker-side calls (`claim_run`, `heartbeat`, `append_metrics`, `append_logs`, `finish_run`,
`is_cancel_requested`, `mark_lost_runs`, `update_summary`, `run_spec`) take the run id first and an
optional `session=`; without one they open and commit their own on the settings' database, so a
training child only needs `SLIMPIPE_DATABASE_URL`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import String, Text, and_, delete, func, insert, or_, select, text, update
from sqlalchemy import cast as cast_sql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend import db
from backend.models import (
    DatabaseIdentity,
    DeletedRun,
    Experiment,
    LogLine,
    Run,
    WorkerCatalog,
    WriteKey,
    log_lines,
    metric_points,
    runs,
    utcnow,
)
from slimpipe import names

T = TypeVar("T")
MetricInput = Mapping[str, Any] | Sequence[Any]
LogInput = str | Mapping[str, Any] | Sequence[Any]


@contextmanager
def _scope(session: Session | None) -> Iterator[Session]:
    """The caller's session (the caller commits), or a fresh one committed here."""
    if session is not None:
        yield session
        return
    with db.session_scope() as own:
        yield own


# --------------------------------------------------------------------------- experiments and runs


def create_experiment(
    *,
    session: Session,
    name: str,
    spec: dict[str, Any],
    sweep: dict[str, list[Any]] | None,
    tags: list[str],
    runs_to_create: list[tuple[dict[str, Any], dict[str, Any]]],
    queue: str,
) -> tuple[Experiment, list[Run]]:
    """One experiment and one queued run per (sweep values, validated spec); flushed, not committed."""
    experiment = Experiment(name=name, spec=spec, sweep=sweep or None, tags=tags)
    session.add(experiment)
    session.flush()
    created = []
    for values, run_spec_data in runs_to_create:
        run = Run(
            experiment_id=experiment.id,
            name=run_name(name, values),
            spec=run_spec_data,
            sweep_values=values,
            status=names.QUEUED,
            queue=queue,
            tags=tags,
            attempt=1,
        )
        session.add(run)
        created.append(run)
    session.flush()
    return experiment, created


def run_name(experiment_name: str, values: Mapping[str, Any]) -> str:
    """`seed-rte backward.topk=0.5`: the experiment's name and each sweep axis by its last two path parts."""
    parts = [f"{'.'.join(path.split('.')[-2:])}={value}" for path, value in values.items()]
    return " ".join([experiment_name, *parts])


def get_experiment(*, session: Session, experiment_id: int) -> Experiment | None:
    return session.get(Experiment, experiment_id)


def list_experiments(*, session: Session, limit: int = 50, offset: int = 0) -> tuple[list[Experiment], int]:
    count = session.scalar(select(func.count()).select_from(Experiment)) or 0
    rows = session.scalars(select(Experiment).order_by(Experiment.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), count


def experiment_run_ids(*, session: Session, experiment_id: int) -> list[int]:
    return list(session.scalars(select(Run.id).where(Run.experiment_id == experiment_id).order_by(Run.id)))


def get_run(*, session: Session, run_id: int) -> Run | None:
    return session.get(Run, run_id)


# Sort keys of the runs list: columns of the row, or figures of its JSON summary (extracted in SQL).
RUN_SORTS = ("id", "name", "status", "created", "best_val_acc", "wire_bytes_per_step", "compression_ratio",
             "time_per_batch_s")  # fmt: skip


def _sort_column(key: str) -> Any:
    columns = {"id": Run.id, "name": func.lower(Run.name), "status": Run.status, "created": Run.created_at}
    return columns[key] if key in columns else Run.summary[key].as_float()


def _contains(column: Any, text: str) -> Any:
    """Case-insensitive substring match in SQL; JSON columns are matched as their JSON text."""
    as_text = column if isinstance(column.type, String) else cast_sql(column, Text)
    return func.lower(as_text).contains(text.lower(), autoescape=True)


def list_runs(
    *,
    session: Session,
    status: str | None = None,
    experiment_id: int | None = None,
    tag: str | None = None,
    search: str | None = None,
    sort: str = "-id",
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Run], int]:
    """One page of runs and how many match; newest first unless `sort` names a key of RUN_SORTS ("-" = descending).

    `tag` matches a substring of any tag, `search` a substring of the name, the tags, the notes or the spec, both
    case-insensitive and in SQL, so the page and the count come from two bounded queries.
    """
    query = select(Run)
    if status:
        query = query.where(Run.status == status)
    if experiment_id is not None:
        query = query.where(Run.experiment_id == experiment_id)
    if tag:
        query = query.where(_contains(Run.tags, tag))
    if search:
        query = query.where(
            or_(
                _contains(Run.name, search),
                _contains(Run.tags, search),
                _contains(Run.notes, search),
                _contains(Run.spec, search),
            )
        )
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    key = sort.removeprefix("-")
    column = _sort_column(key)
    order = column.desc() if sort.startswith("-") else column.asc()
    query = query.order_by(order.nulls_last(), Run.id.desc())
    return list(session.scalars(query.limit(limit).offset(offset))), count


def run_status(*, session: Session, run_id: int) -> str | None:
    """The run's status without loading the row (None when there is no such run)."""
    return session.scalar(select(runs.c.status).where(runs.c.id == run_id))


def runs_by_ids(*, session: Session, run_ids: Iterable[int]) -> list[Run]:
    ids = list(run_ids)
    found = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(ids)))}
    return [found[i] for i in ids if i in found]


def run_gauges(*, session: Session) -> tuple[list[Any], list[Any], datetime | None]:
    """What /metrics reports of the runs (backend/monitoring.py): (status, queue, count) rows, (queue, oldest
    created_at) of the queued runs, and the oldest heartbeat of a running run."""
    counts = session.execute(select(Run.status, Run.queue, func.count()).group_by(Run.status, Run.queue)).all()
    oldest_queued = session.execute(
        select(Run.queue, func.min(Run.created_at)).where(Run.status == names.QUEUED).group_by(Run.queue)
    ).all()
    oldest_beat = session.scalar(select(func.min(Run.heartbeat_at)).where(Run.status == names.RUNNING))
    return list(counts), list(oldest_queued), oldest_beat


def get_run_for_update(*, session: Session, run_id: int) -> Run | None:
    """The run, its row locked until the transaction ends, so two edits of its tags at once both count: FOR
    UPDATE on PostgreSQL; on SQLite, whose driver starts a transaction only at the first write, the
    session's first statement takes the write lock (BEGIN IMMEDIATE)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("BEGIN IMMEDIATE"))
    return session.get(Run, run_id, with_for_update=True)


def update_run(
    *,
    session: Session,
    run: Run,
    tags: list[str] | None = None,
    notes: str | None = None,
    add_tags: Iterable[str] = (),
    remove_tags: Iterable[str] = (),
) -> Run:
    """Replace the run's tags, then add and remove some (in order, each once), and replace its notes ("" clears
    them); None and nothing leave a field as it is."""
    removed = set(remove_tags)
    new_tags = [t for t in dict.fromkeys([*(run.tags if tags is None else tags), *add_tags]) if t not in removed]
    if new_tags != run.tags:
        run.tags = new_tags
    if notes is not None:
        run.notes = notes.strip() or None
    return run


def request_cancel(*, session: Session, run: Run) -> Run:
    """A queued run is cancelled at once; a running one gets the flag its training child checks every step."""
    if run.status == names.QUEUED:
        run.status = names.CANCELLED
        run.cancel_requested = True
        run.finished_at = utcnow()
        run.error = "cancelled before it started"
    elif run.status == names.RUNNING:
        run.cancel_requested = True
    session.flush()
    return run


def create_retry(*, session: Session, run: Run) -> Run:
    """A new queued run with the same frozen spec: `retry_of` points back, `attempt` counts up."""
    retry = Run(
        experiment_id=run.experiment_id,
        name=run.name,
        spec=run.spec,
        sweep_values=run.sweep_values,
        status=names.QUEUED,
        queue=run.queue,
        tags=run.tags,
        attempt=run.attempt + 1,
        retry_of=run.id,
    )
    session.add(retry)
    session.flush()
    return retry


def set_celery_id(*, session: Session, run_id: int, celery_id: str) -> None:
    session.execute(update(runs).where(runs.c.id == run_id).values(celery_id=celery_id))


def delete_run(*, session: Session, run_id: int) -> None:
    """The run, its metric points and its log lines (explicitly, so SQLite without FK pragmas agrees); its
    id is kept in deleted_runs, so workers on other hosts know to remove its folder."""
    session.execute(delete(metric_points).where(metric_points.c.run_id == run_id))
    session.execute(delete(log_lines).where(log_lines.c.run_id == run_id))
    session.execute(update(runs).where(runs.c.retry_of == run_id).values(retry_of=None))
    session.execute(delete(runs).where(runs.c.id == run_id))
    scopes = [metrics_scope(run_id), logs_scope(run_id), retries_scope(run_id)]
    session.execute(delete(WriteKey).where(WriteKey.scope.in_(scopes)))
    session.execute(delete(DeletedRun).where(DeletedRun.run_id == run_id))
    session.execute(insert(DeletedRun).values(run_id=run_id, deleted_at=utcnow()))


# --------------------------------------------------------------------------- keyed writes

EXPERIMENTS_SCOPE = "experiments"


def metrics_scope(run_id: int) -> str:
    return f"runs/{run_id}/metrics"


def logs_scope(run_id: int) -> str:
    return f"runs/{run_id}/logs"


def retries_scope(run_id: int) -> str:
    return f"runs/{run_id}/retry"


class KeyReused(ValueError):
    """A write key sent again with a different write."""


def earlier_write(
    *, session: Session, scope: str, key: str, fingerprint: str | None = None
) -> dict[str, Any] | None:
    """The result stored with the write that used `key` for `scope` before, or None; KeyReused when that
    write's fingerprint differs from this one's."""
    row = session.execute(
        select(WriteKey.result, WriteKey.fingerprint).where(WriteKey.scope == scope, WriteKey.key == key)
    ).first()
    if row is None:
        return None
    if row.fingerprint != fingerprint:
        raise KeyReused(f"{key!r} was used for a different write before; give each write a key of its own")
    return cast(dict[str, Any], row.result)


def keyed_write(
    *,
    session: Session,
    scope: str,
    key: str | None,
    write: Callable[[], dict[str, Any]],
    fingerprint: str | None = None,
    commit: bool = False,
) -> tuple[dict[str, Any], bool]:
    """`write()` with its result stored under `key` in the same transaction, and False; or, when the key was
    used for `scope` before, that write's result and True, writing nothing. No key: `write()`, False.
    `fingerprint` (a digest of the write) must match the first one's, else KeyReused.

    A sender that lost the answer sends again under the same key and the rows are stored once. Two such writes
    at the same moment both pass the check, and the second's commit fails on the key (IntegrityError): with
    `commit`, this commits, and answers that second write with the first one's result."""
    try:
        if key is not None:
            earlier = earlier_write(session=session, scope=scope, key=key, fingerprint=fingerprint)
            if earlier is not None:
                return earlier, True
        result = write()
        if key is not None:
            session.execute(
                insert(WriteKey).values(
                    scope=scope, key=key, result=result, fingerprint=fingerprint, created_at=utcnow()
                )
            )
        if commit:
            session.commit()
        return result, False
    except IntegrityError:
        if not commit or key is None:
            raise
        session.rollback()
        earlier = earlier_write(session=session, scope=scope, key=key, fingerprint=fingerprint)
        if earlier is None:
            raise
        return earlier, True


def forget_write(*, session: Session, scope: str, key: str | None) -> None:
    """Drop a key whose write is undone (its runs could not be queued): the same key sent again writes anew."""
    if key is not None:
        session.execute(delete(WriteKey).where(WriteKey.scope == scope, WriteKey.key == key))


def prune_write_keys(older_than_s: float = WriteKey.KEEP_S, *, session: Session | None = None) -> int:
    """Forget keys older than `older_than_s` (a day: a sender sends again within minutes); how many."""
    with _scope(session) as s:
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        return int(s.execute(delete(WriteKey).where(WriteKey.created_at < cutoff)).rowcount)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- metrics and logs


def _metric_row(run_id: int, point: MetricInput, now: float) -> tuple[int, int, str, float | None, float]:
    if isinstance(point, Mapping):
        step, name, value, at = point["step"], point["name"], point.get("value"), point.get("time")
    else:
        step, name, value = point[0], point[1], point[2]
        at = point[3] if len(point) > 3 else None
    value = None if value is None or not math.isfinite(value) else float(value)
    return (run_id, int(step), str(name), value, float(at or now))


def _metric_rows(
    run_id: int, points: Iterable[MetricInput], now: float, validated: bool
) -> list[tuple[int, int, str, float | None, float]]:
    if validated:
        # (step, name, value, time) tuples already typed by the API's schema: only NaN/inf and missing times need work.
        isfinite = math.isfinite
        typed = cast(list[tuple[int, str, float | None, float | None]], points)
        return [
            (run_id, step, name, value if value is None or isfinite(value) else None, at or now)
            for step, name, value, at in typed
        ]
    return [_metric_row(run_id, p, now) for p in points]


_METRIC_COLUMNS = ("run_id", "step", "name", "value", "time")


def insert_metrics(*, session: Session, run_id: int, points: Iterable[MetricInput], validated: bool = False) -> int:
    """Batch insert as one DB-API executemany of plain tuples (no ORM objects); NaN/inf stored as NULL.

    This is the ingest hot path: a 1,000-point batch costs ~4 ms on SQLite this way, ~6 ms through
    `insert(table)` with dicts and far more through ORM objects.
    """
    rows = _metric_rows(run_id, points, time.time(), validated)
    if rows:
        connection = session.connection()
        mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        sql = f"INSERT INTO metric_points ({', '.join(_METRIC_COLUMNS)}) VALUES ({', '.join([mark] * 5)})"
        if connection.dialect.paramstyle in ("qmark", "format", "pyformat"):
            connection.exec_driver_sql(sql, rows)
        else:  # any other driver: the portable way
            session.execute(insert(metric_points), [dict(zip(_METRIC_COLUMNS, r, strict=True)) for r in rows])
    return len(rows)


def metric_names(*, session: Session, run_id: int) -> list[str]:
    """The run's series names, by skipping through the (run, name, step) index one name at a time.

    A plain DISTINCT reads every point of the run; this reads one index entry per name (a loose
    index scan), which matters at 10^5–10^6 points per run.
    """
    found: list[str] = []
    sql = "SELECT MIN(name) FROM metric_points WHERE run_id = ?"
    params: tuple[Any, ...] = (run_id,)
    while (name := _driver_sql(session, sql, params)[0][0]) is not None:
        found.append(name)
        sql, params = "SELECT MIN(name) FROM metric_points WHERE run_id = ? AND name > ?", (run_id, name)
    return found


def _driver_exec(session: Session, sql: str, params: tuple[Any, ...]) -> Any:
    """Run `sql` written with `?` marks through the DB-API driver (the result, no Row objects)."""
    connection = session.connection()
    if connection.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    return connection.exec_driver_sql(sql, params)


def _driver_sql(session: Session, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """Plain DB-API rows for `sql` written with `?` marks: the read hot paths skip Row objects."""
    return list(_driver_exec(session, sql, params).fetchall())


def read_series(
    *, session: Session, run_id: int, name: str, since_step: int | None = None
) -> tuple[list[int], list[float | None], list[float]]:
    """One series by (run, name, step) — the index's order — as parallel step/value/time lists."""
    sql = "SELECT step, value, time FROM metric_points WHERE run_id = ? AND name = ?"
    params: tuple[Any, ...] = (run_id, name)
    if since_step is not None:
        sql += " AND step > ?"
        params += (since_step,)
    rows = _driver_sql(session, sql + " ORDER BY step, id", params)
    if not rows:
        return [], [], []
    steps, values, times = zip(*rows, strict=True)
    return list(steps), list(values), list(times)


def metrics_after(*, session: Session, run_id: int, after_id: int, limit: int = 5000) -> list[Any]:
    """New points in insertion order (id, step, name, value, time): the live tail's cursor."""
    query = (
        select(
            metric_points.c.id, metric_points.c.step, metric_points.c.name, metric_points.c.value, metric_points.c.time
        )
        .where(metric_points.c.run_id == run_id, metric_points.c.id > after_id)
        .order_by(metric_points.c.id)
        .limit(limit)
    )
    return list(session.execute(query).all())


def iter_metrics(*, session: Session, run_id: int, chunk: int = 20000) -> Iterator[Any]:
    """Every point of a run (step, name, value, time) ordered by name then step, streamed in chunks."""
    after = (None, -1, -1)
    c = metric_points.c
    while True:
        query = select(c.name, c.step, c.id, c.value, c.time).where(c.run_id == run_id)
        if after[0] is not None:
            query = query.where(
                or_(
                    c.name > after[0],
                    and_(c.name == after[0], or_(c.step > after[1], and_(c.step == after[1], c.id > after[2]))),
                )
            )
        rows = session.execute(query.order_by(c.name, c.step, c.id).limit(chunk)).all()
        if not rows:
            return
        for name, step, _id, value, at in rows:
            yield step, name, value, at
        after = (rows[-1][0], rows[-1][1], rows[-1][2])


def _log_row(run_id: int, line: LogInput, now: datetime) -> dict[str, Any]:
    if isinstance(line, str):
        return {"run_id": run_id, "time": now, "level": "INFO", "message": line}
    if isinstance(line, Mapping):
        at = line.get("time")
        if isinstance(at, int | float):
            at = datetime.fromtimestamp(at, tz=now.tzinfo)
        return {
            "run_id": run_id,
            "time": at or now,
            "level": str(line.get("level", "INFO")),
            "message": str(line["message"]),
        }
    level, message = line[0], line[1]
    return {"run_id": run_id, "time": now, "level": str(level), "message": str(message)}


def insert_logs(*, session: Session, run_id: int, lines: Iterable[LogInput]) -> int:
    now = utcnow()
    rows = [_log_row(run_id, line, now) for line in lines]
    if rows:
        session.execute(insert(LogLine), rows)
    return len(rows)


def read_logs(*, session: Session, run_id: int, since_id: int = 0, limit: int | None = None) -> list[LogLine]:
    query = select(LogLine).where(LogLine.run_id == run_id, LogLine.id > since_id).order_by(LogLine.id)
    if limit:
        query = query.limit(limit)
    return list(session.scalars(query))


# --------------------------------------------------------------------------- worker side


def _retry_locked(fn: Callable[[], T], attempts: int = 5) -> T:
    """SQLite answers 'database is locked' when busy_timeout runs out under heavy load; try a few more times."""
    from sqlalchemy.exc import OperationalError

    for i in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            if "locked" not in str(exc).lower() or i == attempts - 1:
                raise
            time.sleep(0.2 * (i + 1))
    raise AssertionError("unreachable")


def claim_run(run_id: int, worker_host: str, celery_id: str | None, *, session: Session | None = None) -> bool:
    """queued → running, atomically; False when the run is not queued (cancelled, already claimed, deleted)."""

    def go() -> bool:
        with _scope(session) as s:
            now = utcnow()
            result = s.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status == names.QUEUED, runs.c.cancel_requested.is_(False))
                .values(
                    status=names.RUNNING,
                    worker_host=worker_host,
                    celery_id=celery_id,
                    started_at=now,
                    heartbeat_at=now,
                    error=None,
                    traceback=None,
                )
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    return _retry_locked(go)


def heartbeat(
    run_id: int, step: int | None = None, total: int | None = None, *, session: Session | None = None
) -> bool:
    """Record liveness and progress; returns whether to stop (cancel requested or run deleted), one round trip."""

    def go() -> bool:
        with _scope(session) as s:
            values: dict[str, Any] = {"heartbeat_at": utcnow()}
            if step is not None:
                values["progress_step"] = step
            if total is not None:
                values["progress_total"] = total
            s.execute(update(runs).where(runs.c.id == run_id).values(**values))
            flag = s.scalar(select(runs.c.cancel_requested).where(runs.c.id == run_id))
            return flag is None or bool(flag)  # a deleted run is as good as cancelled

    return _retry_locked(go)


def _append_keyed(scope: str, key: str | None, session: Session | None, insert_rows: Callable[[Session], int]) -> int:
    def go() -> int:
        with _scope(session) as s:
            result, _ = keyed_write(session=s, scope=scope, key=key, write=lambda: {"accepted": insert_rows(s)})
            return int(result["accepted"])

    return _retry_locked(go)


def append_metrics(
    run_id: int, points: Iterable[MetricInput], *, key: str | None = None, session: Session | None = None
) -> int:
    """Points as dicts `{step, name, value, time?}` or tuples `(step, name, value[, time])`; returns how many.

    `key`: this batch's write key (see `keyed_write`); the same batch sent again under it is stored once."""
    rows = list(points)
    return _append_keyed(metrics_scope(run_id), key, session, lambda s: insert_metrics(session=s, run_id=run_id, points=rows))


def append_logs(
    run_id: int, lines: Iterable[LogInput], *, key: str | None = None, session: Session | None = None
) -> int:
    """Lines as strings, `(level, message)` tuples or dicts `{message, level?, time?}`; `key` as for metrics."""
    rows = list(lines)
    return _append_keyed(logs_scope(run_id), key, session, lambda s: insert_logs(session=s, run_id=run_id, lines=rows))


def finish_run(
    run_id: int,
    status: str,
    error: str | None = None,
    traceback: str | None = None,
    summary: dict[str, Any] | None = None,
    *,
    session: Session | None = None,
) -> bool:
    """running/queued → a final state with its reason; False (and no change) if it already ended."""
    if status not in names.FINAL_STATES:
        raise ValueError(f"finish_run needs a final state ({', '.join(names.FINAL_STATES)}), not {status!r}")

    def go() -> bool:
        with _scope(session) as s:
            values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error, "traceback": traceback}
            current = s.scalar(select(runs.c.summary).where(runs.c.id == run_id)) or {}
            merged = {k: v for k, v in {**current, **(summary or {})}.items() if k not in names.LIVE_ONLY_SUMMARY}
            if merged != current:
                values["summary"] = merged
            result = s.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status.in_((names.QUEUED, names.RUNNING)))
                .values(**values)
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    return _retry_locked(go)


def update_summary(run_id: int, summary: dict[str, Any], *, session: Session | None = None) -> None:
    """Merge keys into the run's summary (the engine may write it while training)."""

    def go() -> None:
        with _scope(session) as s:
            current = s.scalar(select(runs.c.summary).where(runs.c.id == run_id)) or {}
            s.execute(update(runs).where(runs.c.id == run_id).values(summary={**current, **summary}))

    _retry_locked(go)


def is_cancel_requested(run_id: int, *, session: Session | None = None) -> bool:
    """True once a cancel was requested, or when the run was deleted."""
    with _scope(session) as s:
        flag = s.scalar(select(runs.c.cancel_requested).where(runs.c.id == run_id))
        return flag is None or bool(flag)


def run_spec(run_id: int, *, session: Session | None = None) -> dict[str, Any] | None:
    """The frozen spec a run trains (None if the run is gone)."""
    with _scope(session) as s:
        return s.scalar(select(runs.c.spec).where(runs.c.id == run_id))


def database_id(*, session: Session | None = None) -> str:
    """The database's identity (a 32-hex-digit id, made by migration 0003 with the schema)."""
    with _scope(session) as s:
        found = s.scalar(select(DatabaseIdentity.id).order_by(DatabaseIdentity.created_at).limit(1))
    if found is None:
        raise RuntimeError("the database has no identity row; run its migrations (slimpipe serve does)")
    return found


def deleted_run_ids(run_ids: Iterable[int], *, session: Session | None = None) -> set[int]:
    """Which of `run_ids` were deleted through the API and are not runs now (SQLite can give a deleted
    newest run's id to the next run)."""
    ids = sorted(set(run_ids))
    found: set[int] = set()
    with _scope(session) as s:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            found.update(s.scalars(select(DeletedRun.run_id).where(DeletedRun.run_id.in_(chunk))))
            found.difference_update(s.scalars(select(runs.c.id).where(runs.c.id.in_(chunk))))
    return found


def earlier_attempt(run_id: int, *, session: Session | None = None) -> tuple[int, int | None] | None:
    """(the run this one retries, that run's step total as it reported it), or None for a first attempt."""
    with _scope(session) as s:
        source = s.scalar(select(runs.c.retry_of).where(runs.c.id == run_id))
        if source is None:
            return None
        return source, s.scalar(select(runs.c.progress_total).where(runs.c.id == source))


def copy_metrics(source: int, target: int, up_to_step: int, *, session: Session | None = None) -> int:
    """Copy `source`'s metric points of steps <= `up_to_step` to `target` (a retry that continues
    from `source`'s checkpoint); returns how many. One INSERT ... SELECT, nothing read into Python."""
    columns = ", ".join(_METRIC_COLUMNS)
    # the target id as a literal (an int): a bound parameter in a SELECT list has no type for PostgreSQL
    picked = ", ".join(str(int(target)) if c == "run_id" else c for c in _METRIC_COLUMNS)

    sql = f"INSERT INTO metric_points ({columns}) SELECT {picked} FROM metric_points WHERE run_id = ? AND step <= ?"

    def go() -> int:
        with _scope(session) as s:
            return int(_driver_exec(s, sql, (source, up_to_step)).rowcount)

    return _retry_locked(go)


def mark_lost_runs(timeout_s: float, *, session: Session | None = None) -> list[int]:
    """Running runs with no heartbeat for `timeout_s` → failed "worker lost"; returns their ids."""
    cutoff = utcnow() - timedelta(seconds=timeout_s)

    def go() -> list[int]:
        with _scope(session) as s:
            stale = or_(runs.c.heartbeat_at < cutoff, and_(runs.c.heartbeat_at.is_(None), runs.c.started_at < cutoff))
            lost = list(s.scalars(select(runs.c.id).where(runs.c.status == names.RUNNING, stale)))
            if lost:
                s.execute(
                    update(runs)
                    .where(runs.c.id.in_(lost), runs.c.status == names.RUNNING)
                    .values(
                        status=names.FAILED,
                        finished_at=utcnow(),
                        error=f"worker lost: no heartbeat for more than {timeout_s:g} s",
                    )
                )
            return lost

    return _retry_locked(go)


# --------------------------------------------------------------------------- what workers can build


def publish_catalog(worker: str, catalog: dict[str, Any], *, session: Session | None = None) -> None:
    """Replace `worker`'s published catalog (see worker/catalog.py for its shape)."""

    def go() -> None:
        with _scope(session) as s:
            s.execute(delete(WorkerCatalog).where(WorkerCatalog.worker == worker))
            s.execute(insert(WorkerCatalog).values(worker=worker, published_at=utcnow(), catalog=catalog))

    _retry_locked(go)


def model_trees(*, session: Session) -> dict[str, dict[str, Any]]:
    """Per model name, the module tree of the newest catalog that has one."""
    trees: dict[str, dict[str, Any]] = {}
    for catalog in session.scalars(select(WorkerCatalog.catalog).order_by(WorkerCatalog.published_at.desc())):
        for name, model in (catalog.get("models") or {}).items():
            if model.get("tree") is not None:
                trees.setdefault(name, model["tree"])
    return trees
