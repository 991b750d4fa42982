"""The diagnosis: where compression error enters, divergence, eval mismatch, the likely cause."""

from backend.diagnose import diagnose


def _series(**named):
    return {name.replace("__", "/"): (list(range(len(values))), values) for name, values in named.items()}


def _healthy(**extra):
    return {
        **_series(train__acc=[50.0, 80.0, 90.0], val__acc=[70.0, 88.0], val_dense__acc=[70.5, 88.5]),
        "wire/b0/err_fwd": ([1, 2, 3, 4, 5], [0.10] * 5),
        "wire/b0/err_bwd": ([1, 2, 3, 4, 5], [0.20] * 5),
        "wire/b0/cos_bwd": ([1, 2, 3, 4, 5], [0.98] * 5),
        "wire/b1/err_fwd": ([1, 2, 3, 4, 5], [0.0] * 5),
        **extra,
    }


def test_a_healthy_compressed_run_names_its_worst_channel_and_no_problem():
    d = diagnose(_healthy())
    assert d["worst"] == {"boundary": 0, "direction": "backward", "rel_error": 0.2, "cosine": 0.98}
    assert d["eval_mismatch"] == -0.5 and d["train_val_gap"] == 2.0 and not d["diverging"]
    assert d["likely_cause"].startswith("no compression problem")
    assert [c["boundary"] for c in d["channels"]] == [0, 0, 1]


def test_dense_and_compressed_evaluations_that_disagree_are_a_mismatch():
    d = diagnose(_healthy(**_series(val_dense__acc=[70.0, 80.0])))
    assert d["eval_mismatch"] == 8.0
    assert d["likely_cause"].startswith("train/eval mismatch") and "8.0 points higher" in d["likely_cause"]


def test_misdirected_gradients_are_blamed_on_their_boundary():
    d = diagnose(_healthy(**{"wire/b1/err_bwd": ([0, 1, 2, 3, 4], [0.9] * 5),
                             "wire/b1/cos_bwd": ([0, 1, 2, 3, 4], [1.0, 1.0, 1.0, 1.0, 0.5])}))
    assert d["worst"]["boundary"] == 1 and d["worst"]["cosine"] == 0.5  # late-run mean: the last fifth
    assert "boundary 1's compressed gradients" in d["likely_cause"]


def test_val_falling_while_train_fits_is_divergence():
    d = diagnose({**_series(train__acc=[90.0, 99.0, 100.0], val__acc=[85.0, 70.0]),
                  "wire/b0/err_fwd": ([0], [0.01])})
    assert d["diverging"] and d["train_val_gap"] == 30.0
    assert d["likely_cause"].startswith("validation falls")


def test_uncompressed_and_unevaluated_runs_say_so():
    assert diagnose(_series(train__acc=[50.0]))["likely_cause"].startswith("no validation yet")
    assert diagnose(_series(train__acc=[50.0], val__acc=[40.0]))["likely_cause"].startswith("no boundary is compressed")


def test_the_endpoint_diagnoses_a_runs_stored_series(api, submit):
    run_id = submit()["run_ids"][0]
    points = [{"step": s, "name": "train/acc", "value": 90.0} for s in range(1, 6)]
    points += [{"step": 5, "name": "val/acc", "value": 80.0}, {"step": 5, "name": "val_dense/acc", "value": 60.0}]
    points += [{"step": s, "name": "wire/b0/err_bwd", "value": 0.3} for s in range(1, 6)]
    points += [{"step": s, "name": "wire/b0/cos_bwd", "value": 0.95} for s in range(1, 6)]
    assert api.post(f"/api/v1/runs/{run_id}/metrics", json={"points": points}).status_code == 202
    body = api.get(f"/api/v1/runs/{run_id}/diagnose").json()
    assert body["worst"] == {"boundary": 0, "direction": "backward", "rel_error": 0.3, "cosine": 0.95}
    assert body["eval_mismatch"] == 20.0 and body["likely_cause"].startswith("train/eval mismatch")
    assert api.get("/api/v1/runs/999999/diagnose").status_code == 404


def test_a_compressed_run_without_boundary_errors_is_not_called_uncompressed():
    """The distributed runner measures no error for feedback codecs: the wire ratio still says it compresses."""
    d = diagnose(_series(train__acc=[50.0, 60.0], val__acc=[40.0, 55.0], wire__ratio=[11.1, 11.1]))
    assert d["channels"] == [] and not d["likely_cause"].startswith("no boundary is compressed")
    assert "recorded no boundary error" in d["likely_cause"]
    dense = diagnose(_series(train__acc=[50.0, 60.0], val__acc=[40.0, 55.0], wire__ratio=[1.0, 1.0]))
    assert dense["likely_cause"].startswith("no boundary is compressed")
