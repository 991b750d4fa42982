import csv
import io

import pytest

from backend import crud, db
from slimpipe import names
from tests.backend.conftest import SPEC

SWEEP = {"compression.default.backward.topk": [1, 0.5, 0.4]}


def finish(database_url, run_id, **summary):
    with db.session_scope(database_url) as session:
        crud.claim_run(run_id, "host", "c", session=session)
        crud.finish_run(run_id, names.SUCCEEDED, summary=summary, session=session)


@pytest.fixture
def seed_sweep(api, submit, settings):
    """The seed's RTE table: keep ratio 1 → 85.7, 0.5 → 69.4; compressed runs are cheaper on the link."""
    ids = submit(sweep=SWEEP)["run_ids"]
    figures = [
        dict(best_val_acc=86.0, final_val_acc=85.7, wire_bytes_per_step=8e6, compression_ratio=1.0, time_per_batch_s=0.2, link_time_per_step_s=0.6),
        dict(best_val_acc=70.0, final_val_acc=69.4, wire_bytes_per_step=6e6, compression_ratio=4 / 3, time_per_batch_s=0.2, link_time_per_step_s=0.2),
        dict(best_val_acc=69.9, final_val_acc=69.4, wire_bytes_per_step=5.6e6, compression_ratio=1.43, time_per_batch_s=0.25, link_time_per_step_s=0.15),
    ]
    for run_id, summary in zip(ids, figures, strict=True):
        finish(settings.database_url, run_id, **summary)
    return ids


def test_compare_finds_the_uncompressed_baseline_and_computes_speedup(api, seed_sweep):
    base, half, forty = seed_sweep
    table = api.get("/api/v1/compare", params={"run_ids": f"{half},{forty},{base}"}).json()
    assert table["baseline_run_id"] == base
    assert table["varying_fields"] == ["compression.default.backward.topk"]
    rows = {r["run_id"]: r for r in table["runs"]}
    assert [r["run_id"] for r in table["runs"]] == [half, forty, base]  # the order asked for
    assert rows[half]["differences"] == {"compression.default.backward.topk": 0.5}
    assert rows[base]["differences"] == {"compression.default.backward.topk": 1.0}
    assert rows[half]["delta_val_acc"] == pytest.approx(69.4 - 85.7)
    assert rows[base]["delta_val_acc"] == 0.0 and rows[base]["speedup"] == pytest.approx(1.0)
    assert rows[half]["speedup"] == pytest.approx(0.8 / 0.4)
    assert rows[forty]["speedup"] == pytest.approx(0.8 / 0.4)
    assert rows[half]["wire_bytes_per_step"] == 6e6 and rows[half]["compression_ratio"] == pytest.approx(4 / 3)
    assert rows[forty]["best_val_acc"] == 69.9 and rows[forty]["status"] == "succeeded"


def test_baseline_is_looked_up_in_the_experiment_when_not_compared(api, seed_sweep):
    base, half, forty = seed_sweep
    table = api.get("/api/v1/compare", params={"run_ids": f"{half},{forty}"}).json()
    assert table["baseline_run_id"] == base
    assert table["runs"][0]["speedup"] == pytest.approx(2.0)


def test_explicit_baseline_wins(api, seed_sweep):
    base, half, forty = seed_sweep
    table = api.get("/api/v1/compare", params={"run_ids": f"{base},{forty}", "baseline": half}).json()
    assert table["baseline_run_id"] == half
    rows = {r["run_id"]: r for r in table["runs"]}
    assert rows[base]["speedup"] == pytest.approx(0.4 / 0.8)
    assert rows[base]["delta_val_acc"] == pytest.approx(85.7 - 69.4)


def test_figures_fall_back_to_metric_series(api, submit, settings):
    compressed = dict(SPEC, compression={"default": {"forward": {"bits": 8}}})
    run_id = submit(compressed)["run_ids"][0]
    points = [{"step": s, "name": "val/acc", "value": v} for s, v in [(10, 50.0), (20, 75.0), (30, 70.0)]]
    points += [{"step": s, "name": "time/batch_s", "value": v} for s, v in [(1, 0.1), (2, 0.3)]]
    points += [{"step": s, "name": n, "value": 1000.0} for s in (1, 2) for n in ("wire/bytes_fwd", "wire/bytes_bwd")]
    points += [{"step": 1, "name": "wire/ratio", "value": 4.0}]
    api.post(f"/api/v1/runs/{run_id}/metrics", json={"points": points})
    row = api.get("/api/v1/compare", params={"run_ids": str(run_id)}).json()["runs"][0]
    assert row["best_val_acc"] == 75.0 and row["final_val_acc"] == 70.0
    assert row["time_per_batch_s"] == pytest.approx(0.2)
    assert row["wire_bytes_per_step"] == 2000.0 and row["compression_ratio"] == 4.0
    assert row["speedup"] is None and row["delta_val_acc"] is None


def test_compare_csv_and_errors(api, seed_sweep):
    base, half, _ = seed_sweep
    api.patch(f"/api/v1/runs/{half}", json={"tags": ["paper", "keep-0.5"], "notes": "holds at half the bytes, fails at 0.1"})
    response = api.get("/api/v1/compare.csv", params={"run_ids": f"{base},{half}"})
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(r["run_id"]) for r in rows] == [base, half]
    assert rows[1]["compression.default.backward.topk"] == "0.5"
    assert float(rows[1]["speedup"]) == pytest.approx(2.0)
    assert (rows[1]["tags"], rows[1]["notes"]) == ("paper; keep-0.5", "holds at half the bytes, fails at 0.1")
    assert rows[0]["notes"] == ""
    listed = api.get("/api/v1/compare", params={"run_ids": f"{base},{half}"}).json()["runs"]
    assert listed[1]["tags"] == ["paper", "keep-0.5"] and listed[0]["notes"] is None
    assert api.get("/api/v1/compare", params={"run_ids": f"{base},999999"}).status_code == 404
    bad = api.get("/api/v1/compare", params={"run_ids": "a,b"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "run_ids"


def test_speedup_comes_from_the_replayed_time_not_the_noisy_measured_one(api, submit, settings):
    base, half = submit(sweep={"compression.default.backward.topk": [1, 0.5]})["run_ids"]
    finish(settings.database_url, base, time_per_batch_s=1.7, link_time_per_step_s=0.1, modelled_time_per_batch_s=0.3)
    finish(settings.database_url, half, time_per_batch_s=0.1, link_time_per_step_s=0.1, modelled_time_per_batch_s=0.2)
    rows = {r["run_id"]: r for r in api.get("/api/v1/compare", params={"run_ids": f"{base},{half}"}).json()["runs"]}
    assert rows[half]["speedup"] == pytest.approx(1.5) and rows[half]["modelled_time_per_batch_s"] == 0.2


def test_fields_a_preset_sets_are_implied_by_it_not_listed_as_differences(api, submit):
    """balanced vs aggressive differ in nine compression.default fields; the table names the preset, and a field
    a run sets over its preset still counts as a difference."""
    presets = submit(sweep={"compression.preset": ["balanced", "aggressive"]})["run_ids"]
    table = api.get("/api/v1/compare", params={"run_ids": ",".join(map(str, presets))}).json()
    assert table["varying_fields"] == ["compression.preset"]
    assert "compression.default.backward.bits" in table["implied_fields"]
    assert "compression.default.forward.entropy" in table["implied_fields"]
    assert {r["differences"]["compression.default.backward.bits"] for r in table["runs"]} == {8, 3}

    # aggressive with 8-bit activations: forward.bits is no longer the preset's
    over = submit(spec={**SPEC, "compression": {"preset": "aggressive", "default": {"forward": {"bits": 8}}}})["run_ids"]
    table = api.get("/api/v1/compare", params={"run_ids": ",".join(map(str, presets + over))}).json()
    assert table["varying_fields"] == ["compression.default.forward.bits", "compression.preset"]
    assert "compression.default.forward.bits" not in table["implied_fields"]
    assert [r["differences"]["compression.default.forward.bits"] for r in table["runs"]] == [4, 4, 8]

    # an uncompressed run: its plain defaults are what "no preset" gives
    plain = submit(spec={**SPEC, "compression": {}})["run_ids"]
    table = api.get("/api/v1/compare", params={"run_ids": ",".join(map(str, presets + plain))}).json()
    assert table["varying_fields"] == ["compression.preset"]

    # the CSV keeps every field that differs
    text = api.get("/api/v1/compare.csv", params={"run_ids": ",".join(map(str, presets))}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["compression.preset"] for r in rows] == ["balanced", "aggressive"]
    assert [r["compression.default.backward.bits"] for r in rows] == ["8", "3"]
