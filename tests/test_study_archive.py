"""studies/compression/run.py keeps every measured row in a committed archive and replaces only re-measured ones."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_module():
    spec = importlib.util.spec_from_file_location("study_run", ROOT / "studies" / "compression" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(task: str, method: str, acc: float, seeds: int = 3) -> dict:
    return {"task": task, "method": method, "seeds": seeds, "status": "succeeded" if seeds else "queued", "val_acc": acc}


def test_merge_replaces_remeasured_rows_and_keeps_the_rest(tmp_path):
    run = _run_module()
    archive = tmp_path / "measured.json"
    archive.write_text(json.dumps([{**_row("cnn", "none", 97.0), "date": "old"}, {**_row("cnn", "q4", 96.1), "date": "old"}]))
    merged = run.merge_archive([_row("cnn", "q4", 95.0), _row("minilm", "none", 90.0, seeds=0)], archive, "2026-12-01")
    by_key = {(r["task"], r["method"]): r for r in merged}
    assert by_key[("cnn", "none")]["val_acc"] == 97.0 and by_key[("cnn", "none")]["date"] == "old"
    assert by_key[("cnn", "q4")]["val_acc"] == 95.0 and by_key[("cnn", "q4")]["date"] == "2026-12-01"
    assert by_key[("minilm", "none")]["seeds"] == 0  # not measured yet: reported, not archived
    stored = json.loads(archive.read_text())
    assert [(r["task"], r["method"], r["val_acc"]) for r in stored] == [("cnn", "none", 97.0), ("cnn", "q4", 95.0)]


def test_an_unfinished_rerun_does_not_hide_the_archived_row(tmp_path):
    run = _run_module()
    archive = tmp_path / "measured.json"
    archive.write_text(json.dumps([{**_row("cnn", "q4", 96.1), "date": "old"}]))
    merged = run.merge_archive([_row("cnn", "q4", 0.0, seeds=0)], archive, "2026-12-01")
    assert [(r["method"], r["val_acc"], r["seeds"]) for r in merged] == [("q4", 96.1, 3)]


def test_the_committed_archive_holds_rows_the_report_can_print():
    rows = json.loads((ROOT / "studies" / "compression" / "measured.json").read_text())
    assert {r["task"] for r in rows} == {"cnn", "minilm"}
    for r in rows:
        assert r["seeds"] >= 1 and r["ratio"] >= 1.0 and 0.0 <= r["val_acc"] <= 100.0
        assert r["val_acc_min"] <= r["val_acc"] + 0.06 and r["val_acc"] <= r["val_acc_max"] + 0.06  # 1-decimal min/max
    none = {r["task"]: r for r in rows if r["method"] == "none"}
    assert none["cnn"]["seeds"] == none["minilm"]["seeds"] == 3
    run = _run_module()
    assert "| none | 1.0x |" in run.table(rows, "minilm")


def test_versus_none_pairs_the_seeds_a_row_shares_with_the_uncompressed_run():
    run = _run_module()
    base = {**_row("minilm", "none", 89.88), "per_seed": {"0": 90.91, "1": 88.84, "2": 89.88}}
    one_seed = {**_row("minilm", "x", 90.70, seeds=1), "per_seed": {"0": 90.70}}
    assert abs(run.versus(one_seed, base) - (90.70 - 90.91)) < 1e-9  # not 90.70 - 89.88
    old = _row("minilm", "old", 88.29)  # archived before per-seed figures: difference of the means
    assert abs(run.versus(old, base) - (88.29 - 89.88)) < 1e-9
    assert run.versus(one_seed, None) is None
