"""Metric ingest over REST (points/s, batches of 1,000) and reading back one 10,000-point series: slimpipe vs MLflow.

Both servers run as one process on 127.0.0.1 with a SQLite store in a temporary folder; both are fed
the same points over HTTP with keep-alive. MLflow's tracking server comes from a throwaway venv
(`python -m venv /tmp/mlflow-venv && pip install mlflow==3.18.0`), installed here when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

MLFLOW_VERSION = "3.18.0"
BATCH = 1000
READ_POINTS = 10_000
TARGET = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def server(argv: list[str], health_url: str, env: dict[str, str], workdir: Path, name: str) -> Iterator[None]:
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        wait_http(health_url, process, 120, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def workload(n_points: int) -> list[list[tuple[int, str, float]]]:
    """Batches of 1,000 (step, name, value): a training log of 4 series, as the engine writes it."""
    series = ["train/loss", "train/acc", "wire/bytes_fwd", "time/batch_s"]
    points = [(i // len(series), series[i % len(series)], 1.0 / (1 + i)) for i in range(n_points)]
    return [points[i : i + BATCH] for i in range(0, n_points, BATCH)]


def measure_ingest(send: Callable[[list[tuple[int, str, float]]], None], batches: list) -> float:
    """Points per second over all batches, sent one after another."""
    start = time.perf_counter()
    for batch in batches:
        send(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def measure_keyed(send: Callable[[list[tuple[int, str, float]], bool], None], batches: list) -> dict[str, float]:
    """Median seconds per batch without and with an `Idempotency-Key`, the two interleaved batch by batch
    (the order alternating), so both see the same machine."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for i, batch in enumerate(batches):
        for keyed in (False, True) if i % 2 else (True, False):
            start = time.perf_counter()
            send(batch, keyed)
            times[keyed].append(time.perf_counter() - start)
    plain, keyed = statistics.median(times[False]), statistics.median(times[True])
    return {"batch_median_s": plain, "keyed_batch_median_s": keyed, "keyed_cost": keyed / plain - 1}


def measure_read(read: Callable[[], int], repeats: int) -> list[float]:
    """Seconds per read of the whole series, in order; checks every point came back."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = read()
        times.append(time.perf_counter() - start)
        if n != READ_POINTS:
            raise RuntimeError(f"read back {n} points, expected {READ_POINTS}")
    return times


def read_figures(reads: list[float]) -> dict[str, Any]:
    return {"read_first_s": reads[0], "read_median_s": statistics.median(reads), "read_times_s": reads}


# --------------------------------------------------------------------------- slimpipe


def bench_slimpipe(n_points: int, repeats: int, database_url: str | None, workdir: Path) -> dict[str, Any]:
    from backend import db

    url = database_url or f"sqlite:///{workdir / 'slimpipe.db'}"
    db.migrate(url)
    port = free_port()
    env = {
        "SLIMPIPE_DATABASE_URL": url,
        "SLIMPIPE_BROKER_DIR": str(workdir / "broker"),
        "SLIMPIPE_API_TOKEN": "",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    argv = [sys.executable, "-m", "uvicorn", "backend.main:app", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--log-level", "warning", "--no-access-log"]
    base = f"http://127.0.0.1:{port}"
    with server(argv, f"{base}/healthz", env, workdir, "slimpipe"), httpx.Client(base_url=base, timeout=60) as http:
        spec = {"name": "ingest-bench", "model": {"name": "tiny_mlp"}, "data": {"name": "digits"}, "train": {"max_steps": 1}}
        run_id = http.post("/api/v1/experiments", json={"spec": spec}).raise_for_status().json()["run_ids"][0]

        def send(batch: list[tuple[int, str, float]], keyed: bool = False) -> None:
            points = [{"step": s, "name": n, "value": v} for s, n, v in batch]
            headers = {"Idempotency-Key": uuid.uuid4().hex} if keyed else {}
            http.post(f"/api/v1/runs/{run_id}/metrics", json={"points": points}, headers=headers).raise_for_status()

        for _ in range(3):  # warm up the connection and the server's code paths
            send(workload(BATCH)[0])
        ingest = measure_ingest(send, workload(n_points))
        keyed = measure_keyed(send, workload(n_points))
        for batch in range(READ_POINTS // BATCH):
            send([(batch * BATCH + i, "read/series", float(i)) for i in range(BATCH)])

        def read() -> int:
            params: dict[str, Any] = {"names": "read/series", "max_points": READ_POINTS}
            body = http.get(f"/api/v1/runs/{run_id}/metrics", params=params).raise_for_status().json()
            return len(body["series"]["read/series"]["value"])

        reads = measure_read(read, repeats)
    return {"ingest_points_per_s": ingest, **keyed, **read_figures(reads), "store": url.split(":")[0]}


# --------------------------------------------------------------------------- MLflow


def _pip_install(venv: Path, version: str) -> str | None:
    """None on success, else pip's last line."""
    if not (venv / "bin" / "pip").exists():
        done = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
        if done.returncode != 0:
            return (done.stderr or done.stdout).strip()[-300:]
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"mlflow=={version}"], capture_output=True, text=True)
    if done.returncode == 0:
        return None
    lines = [line for line in (done.stderr or done.stdout).splitlines() if line.startswith("ERROR")]
    return (lines or ["pip failed"])[-1]


def mlflow_python(venv: Path, install: bool, fallback: str | None) -> tuple[Path | None, str, list[str]]:
    """(python of the MLflow venv, its MLflow version, notes on what was tried)."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import mlflow; print(mlflow.__version__)"]

    def installed() -> str | None:
        if not python.exists():
            return None
        done = subprocess.run(probe, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    notes: list[str] = []
    version = installed()
    if version == MLFLOW_VERSION or (version and not install):
        return python, version, notes
    if not install:
        return None, "", [f"no MLflow in {venv}; run without --no-install to install mlflow=={MLFLOW_VERSION}"]
    for wanted in [MLFLOW_VERSION, *([fallback] if fallback else [])]:
        if version == wanted:
            notes.append(f"mlflow=={MLFLOW_VERSION} did not install; measured the installed mlflow=={version}")
            return python, version, notes
        print(f"installing mlflow=={wanted} into {venv} ...", file=sys.stderr, flush=True)
        error = _pip_install(venv, wanted)
        if error is None:
            version = installed()
            if version:
                return python, version, notes
        notes.append(f"pip install mlflow=={wanted} failed: {error}")
    return None, "", notes


def bench_mlflow(python: Path, n_points: int, repeats: int, workdir: Path) -> dict[str, Any]:
    port = free_port()
    store = workdir / "mlflow"
    store.mkdir()
    argv = [str(python), "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}"]
    argv += ["--default-artifact-root", str(store / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    base = f"http://127.0.0.1:{port}"
    api = "/api/2.0/mlflow"
    with server(argv, f"{base}/health", {}, workdir, "mlflow"), httpx.Client(base_url=base, timeout=120) as http:
        experiment = http.post(f"{api}/experiments/create", json={"name": "ingest-bench"}).raise_for_status().json()
        created = http.post(
            f"{api}/runs/create", json={"experiment_id": experiment["experiment_id"], "start_time": int(time.time() * 1000)}
        )
        run_id = created.raise_for_status().json()["run"]["info"]["run_id"]
        now_ms = int(time.time() * 1000)

        def send(batch: list[tuple[int, str, float]]) -> None:
            metrics = [{"key": n, "value": v, "timestamp": now_ms, "step": s} for s, n, v in batch]
            http.post(f"{api}/runs/log-batch", json={"run_id": run_id, "metrics": metrics}).raise_for_status()

        for _ in range(3):
            send([(s + 1_000_000, n, v) for s, n, v in workload(BATCH)[0]])
        ingest = measure_ingest(send, workload(n_points))
        for batch in range(READ_POINTS // BATCH):
            send([(batch * BATCH + i, "read_series", float(i)) for i in range(BATCH)])

        def read() -> int:
            metrics: list[Any] = []
            token = None
            while True:
                params: dict[str, Any] = {"run_id": run_id, "metric_key": "read_series", "max_results": 25000}
                if token:
                    params["page_token"] = token
                body = http.get(f"{api}/metrics/get-history", params=params).raise_for_status().json()
                metrics += body.get("metrics", [])
                token = body.get("next_page_token")
                if not token:
                    return len(metrics)

        reads = measure_read(read, repeats)
    return {"ingest_points_per_s": ingest, **read_figures(reads), "store": "sqlite"}


# --------------------------------------------------------------------------- report


def render(ours: dict[str, Any], theirs: dict[str, Any] | None, mlflow_label: str, n_points: int) -> str:
    def figure(side: dict[str, Any] | None, key: str, spec: str) -> str:
        return format(side[key], spec) if side else "-"

    def ratio(key: str, higher_is_better: bool) -> str:
        if not theirs:
            return "-"
        a, b = (ours[key], theirs[key]) if higher_is_better else (theirs[key], ours[key])
        return f"{a / b:.1f}x"

    rows = [
        ("ingest, points/s", figure(ours, "ingest_points_per_s", ",.0f"), figure(theirs, "ingest_points_per_s", ",.0f"),
         ratio("ingest_points_per_s", True)),
        ("read 10,000 points, s (median)", figure(ours, "read_median_s", ".4f"), figure(theirs, "read_median_s", ".4f"),
         ratio("read_median_s", False)),
        ("read 10,000 points, s (first)", figure(ours, "read_first_s", ".4f"), figure(theirs, "read_first_s", ".4f"),
         ratio("read_first_s", False)),
    ]  # fmt: skip
    table = [("", "slimpipe", mlflow_label, "slimpipe vs MLflow"), *rows]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    stores = "SQLite stores" if ours["store"] == "sqlite" else f"slimpipe on {ours['store']}, MLflow on SQLite"
    lines = [f"metric ingest over REST: {n_points:,} points in batches of {BATCH:,}; one server process each, {stores}"]
    for row in table:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    if "keyed_cost" in ours:
        lines.append(
            f"each batch with an Idempotency-Key: {ours['keyed_batch_median_s'] * 1e3:.2f} ms vs "
            f"{ours['batch_median_s'] * 1e3:.2f} ms without ({ours['keyed_cost']:+.1%}; medians, interleaved)"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--points", type=int, default=100_000, help="points to ingest (default 100,000)")
    parser.add_argument("--repeats", type=int, default=7, help="reads of the 10,000-point series (median reported)")
    parser.add_argument("--database-url", help="slimpipe's store (default: a SQLite file in a temp folder)")
    parser.add_argument("--mlflow-venv", type=Path, default=Path("/tmp/mlflow-venv"))
    parser.add_argument("--no-install", action="store_true", help="do not install MLflow when the venv lacks it")
    parser.add_argument(
        "--mlflow-fallback",
        default="3.17.2",
        help=f"version to install when mlflow=={MLFLOW_VERSION} cannot be (its mlflow-skinny may be missing from the index)",
    )
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="slimpipe-bench-ingest-"))
    try:
        ours = bench_slimpipe(args.points, args.repeats, args.database_url, workdir)
        theirs: dict[str, Any] | None = None
        label, notes, version = "MLflow", list[str](), None
        if not args.skip_mlflow:
            python, version, notes = mlflow_python(args.mlflow_venv, not args.no_install, args.mlflow_fallback)
            if python is not None:
                label = f"MLflow {version}"
                theirs = bench_mlflow(python, args.points, args.repeats, workdir)
        print(render(ours, theirs, label, args.points))
        load = os.getloadavg()
        print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} while measuring")
        for note in notes:
            print(f"note: {note}")
        if not args.skip_mlflow and theirs is None:
            print("MLflow not measured.")
        result: dict[str, Any] = {"points": args.points, "batch": BATCH, "slimpipe": ours, "mlflow": theirs}
        result["mlflow_version"] = version
        result["load_average"] = list(os.getloadavg())
        if theirs:
            result["ingest_ratio"] = ours["ingest_points_per_s"] / theirs["ingest_points_per_s"]
            result["read_ratio"] = theirs["read_median_s"] / ours["read_median_s"]
            met = result["ingest_ratio"] >= TARGET and result["read_ratio"] >= TARGET
            print(f"target >= {TARGET:.0f}x MLflow on both: {'met' if met else 'NOT met'}")
        print(json.dumps(result))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
