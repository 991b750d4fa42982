"""The REST client: `Client(url, token)` submits specs and sweeps, reads runs, metrics and logs, and compares runs.

    from slimpipe.client import Client
    client = Client()                       # SLIMPIPE_URL / SLIMPIPE_API_TOKEN, default http://127.0.0.1:8000
    run_ids = client.submit("examples/digits.yaml", sweep={"compression.default.backward.topk": [1, 0.5]})
    for run_id in run_ids:
        client.wait(run_id)
    print(client.compare(run_ids))
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from slimpipe import names
from slimpipe.spec import ExperimentSpec, dump_spec, load_spec_text

DEFAULT_URL = "http://127.0.0.1:8000"
INGEST_BATCH = 5000
RETRY_MAX_S = 10.0  # the longest pause between two tries of a read


class ClientError(RuntimeError):
    """The server said no (its message is kept), or could not be reached."""

    def __init__(self, message: str, status_code: int | None = None, detail: Any = None):
        super().__init__(message)
        self.status_code = status_code
        self.detail = detail


def _message(response: httpx.Response) -> tuple[str, Any]:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    if isinstance(detail, list):
        text = "; ".join(f"{d.get('field')}: {d.get('message')}" if isinstance(d, dict) else str(d) for d in detail)
    else:
        text = str(detail)
    return f"{response.status_code} {text}", detail


def _checked(response: httpx.Response, method: str, path: str) -> httpx.Response:
    """`response`, or ClientError with the server's message if it is an error (its body read)."""
    if response.status_code >= 400:
        message, detail = _message(response)
        raise ClientError(f"{method} {path}: {message}", response.status_code, detail)
    return response


def _spec_data(spec: str | Path | Mapping[str, Any] | ExperimentSpec) -> dict[str, Any]:
    if isinstance(spec, ExperimentSpec):
        return dump_spec(spec)
    if isinstance(spec, Mapping):
        return dict(spec)
    return load_spec_text(Path(spec).read_text())


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return min(max(float(response.headers["retry-after"]), 0.0), RETRY_MAX_S)
    except (KeyError, ValueError):
        return default


class Client:
    """`patience_s`: how long a read (a GET, `wait`, `events`) rides out a service that answers 503 (its
    database restarting) or, once this client has reached it, does not answer at all (the service
    restarting), trying again after 0.5 s, then at doubling intervals up to 10 s (or as Retry-After says).
    Submissions, retries and metric batches carry an `Idempotency-Key`, so one whose answer never came is
    sent again the same way and stored once; other writes are never sent twice. A service never reached
    fails at once. `on_wait(message)` is told when a request starts waiting (the CLI prints it, so a wait
    never looks like a hang)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        patience_s: float = 120.0,
        on_wait: Callable[[str], None] | None = None,
    ):
        self.url = (url or os.environ.get("SLIMPIPE_URL") or DEFAULT_URL).rstrip("/")
        self.patience_s = patience_s
        self.on_wait = on_wait
        self._reached = False  # has this client had an answer from the service yet
        token = token or os.environ.get("SLIMPIPE_API_TOKEN") or None
        # The custom header lets POST/DELETE without a body through the server's cross-site guard.
        headers = {names.CSRF_HEADER: "1", **({"Authorization": f"Bearer {token}"} if token else {})}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # ----------------------------------------------------------------------- transport

    def _request(
        self, method: str, path: str, *, again_on_503: bool = False, keyed: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """`again_on_503`: a write the service refused with 503 stored nothing (its database was away) and is
        sent again, as a read is. `keyed`: the write goes with a fresh `Idempotency-Key`, so when its answer
        never comes it is sent again under the same key (the service stores it once). Any other write is
        never sent twice."""
        if keyed:
            kwargs["headers"] = {**kwargs.get("headers", {}), names.IDEMPOTENCY_HEADER: uuid.uuid4().hex}
        again_on_503 = again_on_503 or method == "GET"
        again_unanswered = keyed or method == "GET"
        give_up = time.monotonic() + (self.patience_s if again_on_503 or again_unanswered else 0.0)
        pause, waited = 0.5, False
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
                    self._reached = True  # it connected, so the request may have arrived: the service is there
                if not again_unanswered or not self._reached or time.monotonic() + pause > give_up:
                    raise self._unreachable(exc) from None
                why = f"no answer ({exc})"
            else:
                self._reached = True
                if response.status_code != 503 or not again_on_503 or time.monotonic() + pause > give_up:
                    return _checked(response, method, path)
                pause = _retry_after(response, pause)
                why = _message(response)[0]
            if not waited and self.on_wait is not None:
                self.on_wait(f"{method} {path}: {why}; trying again for up to {self.patience_s:g} s")
            waited = True
            time.sleep(pause)
            pause = min(2 * pause, RETRY_MAX_S)

    def _unreachable(self, exc: Exception) -> ClientError:
        return ClientError(
            f"cannot reach slimpipe at {self.url} ({exc}); start it with `slimpipe serve` or set SLIMPIPE_URL"
        )

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        return response.json() if response.content else None

    # ----------------------------------------------------------------------- experiments

    def submit(
        self,
        spec: str | Path | Mapping[str, Any] | ExperimentSpec,
        sweep: Mapping[str, Sequence[Any]] | None = None,
        queue: str | None = None,
        tags: Iterable[str] = (),
    ) -> list[int]:
        """Queue a spec (a path to YAML/JSON, a mapping or an ExperimentSpec), one run per sweep point; the run ids."""
        body = {
            "spec": _spec_data(spec),
            "sweep": {k: list(v) for k, v in sweep.items()} if sweep else None,
            "queue": queue,
            "tags": list(tags),
        }
        return list(self._json("POST", "/api/v1/experiments", json=body, keyed=True)["run_ids"])

    def submit_experiment(self, spec: Any, sweep: Mapping[str, Sequence[Any]] | None = None, **kwargs: Any) -> dict:
        """Like `submit`, but the whole answer: `{"experiment_id", "run_ids"}`."""
        body = {"spec": _spec_data(spec), "sweep": {k: list(v) for k, v in sweep.items()} if sweep else None, **kwargs}
        return self._json("POST", "/api/v1/experiments", json=body, keyed=True)

    def validate(self, spec: Any, sweep: Mapping[str, Sequence[Any]] | None = None) -> int:
        """How many runs the spec and sweep would give; ClientError (422, naming the field) if invalid."""
        body = {"spec": _spec_data(spec), "sweep": {k: list(v) for k, v in sweep.items()} if sweep else None}
        return int(self._json("POST", "/api/v1/specs/validate", json=body, again_on_503=True)["runs"])

    def experiments(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        return self._json("GET", "/api/v1/experiments", params={"limit": limit, "offset": offset})["data"]

    def experiment(self, experiment_id: int) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/experiments/{experiment_id}")

    # ----------------------------------------------------------------------- runs

    def runs(
        self,
        status: str | None = None,
        experiment_id: int | None = None,
        tag: str | None = None,
        limit: int = 50,
        offset: int = 0,
        search: str | None = None,
        sort: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first unless `sort` says otherwise ("-best_val_acc"), without spec and traceback.

        `tag` matches part of a tag, `search` part of the name, a tag or the spec, both ignoring case.
        """
        params = {"status": status, "experiment_id": experiment_id, "tag": tag, "limit": limit, "offset": offset}
        params.update(q=search, sort=sort)
        params = {k: v for k, v in params.items() if v is not None}
        return self._json("GET", "/api/v1/runs", params=params)["data"]

    def run(self, run_id: int) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/runs/{run_id}")

    def cancel(self, run_id: int) -> dict[str, Any]:
        return self._json("POST", f"/api/v1/runs/{run_id}/cancel")

    def update_run(
        self,
        run_id: int,
        tags: Iterable[str] | None = None,
        notes: str | None = None,
        add_tags: Iterable[str] = (),
        remove_tags: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Replace the run's tags (the whole list), add and remove some (in one step on the server, so edits
        from elsewhere are kept), and/or replace its notes ("" clears them); returns the run."""
        body: dict[str, Any] = {"add_tags": list(add_tags), "remove_tags": list(remove_tags)}
        if tags is not None:
            body["tags"] = list(tags)
        if notes is not None:
            body["notes"] = notes
        return self._json("PATCH", f"/api/v1/runs/{run_id}", json=body)

    def retry(self, run_id: int) -> dict[str, Any]:
        """A new run of the same spec; returns it (its `retry_of` is `run_id`)."""
        return self._json("POST", f"/api/v1/runs/{run_id}/retry", keyed=True)

    def delete(self, run_id: int) -> None:
        self._request("DELETE", f"/api/v1/runs/{run_id}")

    def wait(self, run_id: int, timeout: float | None = None, poll_s: float = 0.5) -> dict[str, Any]:
        """Block until the run reaches a final state; returns the run. TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["status"] in names.FINAL_STATES:
                return run
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['status']} after {timeout} s")
            time.sleep(poll_s)

    # ----------------------------------------------------------------------- metrics and logs

    def metrics(
        self,
        run_id: int,
        names: Iterable[str] | None = None,
        since_step: int | None = None,
        max_points: int = 2000,
    ) -> dict[str, dict[str, list[Any]]]:
        """`{name: {"step": [...], "value": [...], "time": [...]}}`, downsampled on the server past `max_points`."""
        params: dict[str, Any] = {"max_points": max_points}
        if names:
            params["names"] = ",".join(names)
        if since_step is not None:
            params["since_step"] = since_step
        return self._json("GET", f"/api/v1/runs/{run_id}/metrics", params=params)["series"]

    def metric_names(self, run_id: int) -> list[str]:
        return self._json("GET", f"/api/v1/runs/{run_id}/metric-names")

    def log_metrics(self, run_id: int, points: Iterable[Mapping[str, Any] | Sequence[Any]]) -> int:
        """Send points (`{"step", "name", "value", "time"?}` or `(step, name, value[, time])`) in batches."""
        batch: list[dict[str, Any]] = []
        accepted = 0
        for point in points:
            if not isinstance(point, Mapping):
                point = dict(zip(("step", "name", "value", "time"), point, strict=False))
            batch.append(dict(point))
            if len(batch) >= INGEST_BATCH:
                accepted += self._ingest(run_id, batch)
                batch = []
        if batch:
            accepted += self._ingest(run_id, batch)
        return accepted

    def _ingest(self, run_id: int, batch: list[dict[str, Any]]) -> int:
        path = f"/api/v1/runs/{run_id}/metrics"
        return self._json("POST", path, json={"points": batch}, again_on_503=True, keyed=True)["accepted"]

    def logs(self, run_id: int) -> str:
        return self._request("GET", f"/api/v1/runs/{run_id}/logs").text

    def log_lines(self, run_id: int, since_id: int = 0) -> list[dict[str, Any]]:
        params = {"since_id": since_id, "format": "json"}
        return self._json("GET", f"/api/v1/runs/{run_id}/logs", params=params)["lines"]

    def download(self, run_id: int, what: str = "metrics.csv") -> bytes:
        """`metrics.csv`, `metrics.jsonl`, `spec.yaml` or `logs`, as the server's attachment bytes."""
        return self._request("GET", f"/api/v1/runs/{run_id}/{what}").content

    def download_checkpoint(self, run_id: int, folder: str | Path = ".") -> list[Path]:
        """Unpack the run's latest checkpoint into `folder` (`checkpoint.pt`, and each stage's for a distributed
        run), streamed to disk; the paths written. ClientError (404) where the server holds none."""
        import tarfile
        import tempfile

        path = f"/api/v1/runs/{run_id}/checkpoint.tar"
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile() as spool:
            try:
                with self._http.stream("GET", path) as response:
                    if response.status_code >= 400:
                        response.read()  # the error's body, for its message
                    for chunk in _checked(response, "GET", path).iter_bytes(1 << 20):
                        spool.write(chunk)
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from None
            spool.seek(0)
            written = []
            with tarfile.open(fileobj=spool) as tar:
                for member in tar.getmembers():
                    # only the checkpoint files the server sends, by name: nothing lands outside `folder`
                    if member.isfile() and re.fullmatch(r"checkpoint(\.stage\d+)?\.pt", member.name):
                        source = tar.extractfile(member)
                        assert source is not None
                        with source, open(folder / member.name, "wb") as target:
                            shutil.copyfileobj(source, target, 1 << 20)
                        written.append(folder / member.name)
        return written

    def events(self, run_id: int) -> Iterator[tuple[str, Any]]:
        """The run's Server-Sent Events as (event, data) until the run ends: metrics, log, status. A stream
        lost before the run's final status (the service restarting) is opened again where it stopped (its
        last event id), within `patience_s`; no metric point or log line comes twice."""
        path = f"/api/v1/runs/{run_id}/events"
        cursor: str | None = None
        give_up, pause = time.monotonic() + self.patience_s, 0.5
        while True:
            try:
                params = {"cursor": cursor} if cursor else None
                with self._http.stream("GET", path, params=params, timeout=None) as response:
                    self._reached = True
                    if response.status_code == 503 and time.monotonic() + pause <= give_up:
                        raise httpx.RemoteProtocolError("503: the service's database is away")
                    if response.status_code >= 400:
                        response.read()
                        message, detail = _message(response)
                        raise ClientError(f"GET events: {message}", response.status_code, detail)
                    give_up, pause = time.monotonic() + self.patience_s, 0.5
                    event, data, event_id = "message", list[str](), None
                    for line in response.iter_lines():
                        if not line:
                            if data:
                                payload = json.loads("\n".join(data))
                                yield event, payload
                                if event == "status" and payload.get("status") in (*names.FINAL_STATES, "deleted"):
                                    return
                                cursor = event_id or cursor
                            event, data, event_id = "message", [], None
                        elif line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].lstrip())
                        elif line.startswith("id:"):
                            event_id = line[3:].strip()
                    raise httpx.RemoteProtocolError("the stream ended before the run did")
            except httpx.TransportError as exc:
                if not self._reached or time.monotonic() + pause > give_up:
                    raise ClientError(f"lost the event stream from {self.url}: {exc}") from None
                if pause == 0.5 and self.on_wait is not None:  # the first try of this outage
                    self.on_wait(f"GET {path}: {exc}; opening the stream again for up to {self.patience_s:g} s")
            time.sleep(pause)
            pause = min(2 * pause, RETRY_MAX_S)

    # ----------------------------------------------------------------------- compare, service

    def compare(self, run_ids: Iterable[int], baseline: int | None = None) -> dict[str, Any]:
        """`{"runs": [...], "baseline_run_id", "varying_fields", "implied_fields"}` (see docs/api.md)."""
        params: dict[str, Any] = {"run_ids": ",".join(str(i) for i in run_ids)}
        if baseline is not None:
            params["baseline"] = baseline
        return self._json("GET", "/api/v1/compare", params=params)

    def whatif(self, run_id: int, bandwidth_mbps: float, latency_ms: float = 0.0) -> dict[str, Any]:
        """The run replayed over another link: time per batch and speed-up vs one device (see docs/api.md)."""
        params = {"bandwidth_mbps": bandwidth_mbps, "latency_ms": latency_ms}
        return self._json("GET", f"/api/v1/runs/{run_id}/whatif", params=params)

    def zoo(self) -> dict[str, Any]:
        return self._json("GET", "/api/v1/zoo")

    def ready(self) -> dict[str, bool]:
        response = self._http.get("/readyz")
        return response.json()
