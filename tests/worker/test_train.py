"""worker.train.run: the contract with the Celery task and `slimpipe train`."""

import argparse
import io
import json
import math
import sys

import pytest
import torch

from slimpipe import names
from slimpipe.timeline import Replay
from worker import checkpoint, train, train_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_spec(**overrides):
    spec = {
        "model": {"name": "tiny_mlp", "options": {"hidden": 16}},
        "data": {
            "name": "synthetic_images",
            "options": {"shape": [1, 4, 4], "num_classes": 3, "n_train": 64, "n_val": 32},
            "batch_size": 16,
        },
        "pipeline": {"microbatches": 2},
        "train": {"max_steps": 6, "eval_every": 3},
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            spec.setdefault(section, {})[field] = value
        else:
            spec[section] = {**spec.get(section, {}), **value}
    return spec


TOPK_FWD = {"default": {"forward": {"topk": 0.1}}}


def test_run_reports_metrics_logs_progress_and_a_summary():
    points, lines, progress = [], [], []
    summary = train.run(
        tiny_spec(), on_metrics=points.extend, on_log=lines.append, on_progress=lambda s, t, eta: progress.append((s, t, eta))
    )
    by_name = {}
    for p in points:
        assert set(p) == {"step", "name", "value"} and isinstance(p["step"], int) and isinstance(p["value"], float)
        by_name.setdefault(p["name"], []).append(p)
    expected = {
        names.TRAIN_LOSS,
        names.TRAIN_ACC,
        names.VAL_LOSS,
        names.VAL_ACC,
        names.TIME_BATCH,
        names.WIRE_BYTES_FWD,
        names.WIRE_BYTES_BWD,
        names.WIRE_RATIO,
        names.LINK_TIME,
        names.LR,
        names.CODEC_CACHE_BYTES,
    }
    for b in range(2):
        expected |= {
            names.boundary_metric(b, w) for w in ("bytes_fwd", "bytes_bwd", "err_fwd", "err_bwd", "cos_fwd", "cos_bwd")
        }
    assert set(by_name) == expected
    assert [p["step"] for p in by_name[names.TRAIN_LOSS]] == [1, 2, 3, 4, 5, 6]
    assert [p["step"] for p in by_name[names.VAL_ACC]] == [3, 6]
    assert all(0 <= p["value"] <= 100 for p in by_name[names.VAL_ACC] + by_name[names.TRAIN_ACC])
    # tiny_mlp's default 3 stages: 16x16 then 16x16 fp32 activations per step, gradients the same.
    assert by_name[names.WIRE_BYTES_FWD][0]["value"] == 2 * 16 * 16 * 4
    assert [(s, t) for s, t, _ in progress] == [(s, 6) for s in range(1, 7)]
    # time left: none after the first step (it is left out), then >= 0, and nothing left at the end
    assert progress[0][2] is None and all(eta >= 0 for _, _, eta in progress[1:]) and progress[-1][2] == 0
    assert lines[1].startswith("evaluation checked (compressed) on the first 1 of 1 validation batches in ")
    assert lines[2].startswith("step:1  loss_train:") and "acc1_val:-" in lines[2]
    assert "time_per_batch:" in lines[4] and "wire_fwd:2048" in lines[4] and "ratio:1.00" in lines[4]
    for key in (
        "best_val_acc",
        "final_val_acc",
        "final_train_acc",
        "wire_bytes_fwd_per_step",
        "wire_bytes_bwd_per_step",
        "wire_bytes_per_step",
        "dense_bytes_per_step",
        "compression_ratio",
        "time_per_batch_s",
        "link_time_per_step_s",
    ):
        assert isinstance(summary[key], float), key
    assert summary["steps"] == 6 and summary["cancelled"] is False
    assert summary["wire_bytes_per_step"] == summary["dense_bytes_per_step"] == 4096
    assert summary["compression_ratio"] == 1.0
    # 2 boundaries x 2 directions x 2 micro-batches, 1 ms latency + 512 B at 100 Mbit/s each
    assert summary["link_time_per_step_s"] == pytest.approx(8 * (1e-3 + 512 * 8 / 100e6))
    json.dumps(summary)


def test_should_stop_ends_the_run_early_with_a_cancelled_summary():
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 2

    summary = train.run(tiny_spec(), should_stop=should_stop)
    assert summary["cancelled"] is True and summary["steps"] == 2


def test_a_diverging_loss_raises_with_the_step():
    spec = tiny_spec(optim__lr=1e12, optim__momentum=0.0, train__max_steps=20)
    with pytest.raises(train.TrainingDiverged, match=r"at step \d+"):
        train.run(spec)


def test_compression_shrinks_the_wire_and_reports_error():
    model = {"name": "tiny_mlp", "options": {"hidden": 256}}
    dense = train.run(tiny_spec(model=model))
    sparse = train.run(tiny_spec(model=model, compression=TOPK_FWD))
    # 2 boundaries x 2 micro-batches x 8 samples x 256 fp32 activations
    assert dense["wire_bytes_fwd_per_step"] == sparse["wire_bytes_bwd_per_step"] == 32768
    assert 0.1 < sparse["wire_bytes_fwd_per_step"] / 32768 < 0.15
    assert sparse["compression_ratio"] == pytest.approx(65536 / sparse["wire_bytes_per_step"])


def test_eval_compression_changes_only_evaluation():
    runs = {}
    for mode in ("compressed", "dense", "both"):
        points = []
        torch.manual_seed(123)  # the run must not depend on the caller's RNG either
        summary = train.run(tiny_spec(compression=TOPK_FWD, train__eval_compression=mode), on_metrics=points.extend)
        runs[mode] = (points, summary)
    series = {m: {(p["name"], p["step"]): p["value"] for p in pts} for m, (pts, _) in runs.items()}
    train_names = [names.TRAIN_LOSS, names.TRAIN_ACC, names.WIRE_BYTES_FWD, names.boundary_metric(0, "err_fwd")]
    for name in train_names:
        for step in range(1, 7):
            assert series["compressed"][(name, step)] == series["dense"][(name, step)] == series["both"][(name, step)]
    assert series["both"][(names.VAL_LOSS, 6)] == series["compressed"][(names.VAL_LOSS, 6)]
    assert series["both"][(names.VAL_LOSS_DENSE, 6)] == series["dense"][(names.VAL_LOSS, 6)]
    assert series["compressed"][(names.VAL_LOSS, 6)] != series["dense"][(names.VAL_LOSS, 6)]
    assert (names.VAL_ACC_DENSE, 6) not in series["compressed"]


def test_checkpoint_resume_continues_exactly(tmp_path):
    spec = tiny_spec(
        compression={"default": {"forward": {"topk": 0.2, "feedback": "ef"}, "backward": {"bits": 6}}},
        train__checkpoint_every=3,
    )
    straight = []
    whole = train.run(spec, on_metrics=straight.extend, out_dir=tmp_path / "a")
    calls = []
    first = train.run(spec, out_dir=tmp_path / "b", should_stop=lambda: len(calls.append(1) or calls) > 3)
    assert first["steps"] == 3 and checkpoint.checkpoint_step(tmp_path / "b" / "checkpoint.pt") == 3
    assert checkpoint.checkpoint_step(tmp_path / "missing.pt") is None
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["cancelled"] is True
    resumed = []
    summary = train.run(spec, on_metrics=resumed.extend, out_dir=tmp_path / "b", resume=True)
    assert summary["steps"] == 6
    # The validation figures of the steps before the checkpoint count in the resumed run's summary.
    assert summary["best_val_acc"] == whole["best_val_acc"] == max(
        p["value"] for p in straight if p["name"] == names.VAL_ACC
    )

    def losses(points):
        return {p["step"]: p["value"] for p in points if p["name"] == names.TRAIN_LOSS}

    assert losses(resumed) == {s: v for s, v in losses(straight).items() if s > 3}
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 6 and set(state) >= {"model", "optimizer", "codecs", "step"}
    assert "forward.sender" in state["codecs"][0]


def test_a_batch_larger_than_the_training_split_is_the_whole_split_and_the_log_says_so():
    lines: list[str] = []
    summary = train.run(tiny_spec(data__batch_size=100, train={"max_steps": 2}), on_log=lines.append)
    assert "data.batch_size 100 is more than the 64 training samples: every step trains on all 64" in lines
    # all 64 samples cross both boundaries: 2 x 64 x 16 fp32 activations
    assert summary["steps"] == 2 and summary["wire_bytes_fwd_per_step"] == 2 * 64 * 16 * 4
    lines.clear()
    train.run(tiny_spec(), on_log=lines.append)
    assert not any(x.startswith("data.batch_size") for x in lines)


def test_out_dir_gets_metrics_log_and_summary(tmp_path):
    summary = train.run(tiny_spec(), out_dir=tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 1, "name": names.WIRE_BYTES_FWD, "value": 2048.0} in rows
    log = (tmp_path / "log.txt").read_text().splitlines()
    assert sum(line.startswith("step:") for line in log) == 6
    assert json.loads((tmp_path / "summary.json").read_text())["final_val_acc"] == summary["final_val_acc"]


def test_real_digits_learn_in_a_few_steps():
    spec = {
        "model": {"name": "tiny_cnn", "options": {"width": 8}},
        "data": {"name": "digits", "batch_size": 64},
        "pipeline": {"microbatches": 4, "schedule": "1f1b"},
        "optim": {"lr": 0.05},
        "train": {"max_steps": 40, "eval_every": 40},
    }
    summary = train.run(spec)
    assert summary["final_val_acc"] > 60 and math.isfinite(summary["final_val_loss"])


def cli(argv):
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    return train_cli.run(parser.parse_args(argv))


def test_cli_trains_a_spec_file_with_overrides(tmp_path, capsys):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(tiny_spec()))
    assert (
        cli(
            [
                str(spec_file),
                "--out",
                str(tmp_path / "out"),
                "--set",
                "train.max_steps=4",
                "--set",
                "pipeline.schedule=1f1b",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("step:") == 4 and "done: 4 steps" in out
    assert (tmp_path / "out" / "summary.json").exists()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cli_on_a_terminal_shows_a_bar_not_a_line_per_step(tmp_path, capsys, monkeypatch):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(tiny_spec(train__max_steps=4, train__eval_every=2)))
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert cli([str(spec_file)]) == 0
    out = capsys.readouterr().out
    assert "step:" not in out and out.count("done: 4 steps") == 1  # the bar has the per-step figures
    bar = terminal.getvalue()
    assert "4/4" in bar and "loss_train=" in bar and "acc1_val=" in bar


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(tiny_spec(pipeline={"stages": [["flatten", "fc1", "act1"], ["fc9"]]})))
    assert cli([str(spec_file)]) == 2
    err = capsys.readouterr().err
    assert "no module 'fc9'" in err and "valid children: flatten, fc1, act1, fc2, act2, head" in err
    assert cli([str(tmp_path / "missing.yaml")]) == 2


def test_cli_runs_a_sweep_one_point_after_another(tmp_path, capsys):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(tiny_spec(train__max_steps=2, train__eval_every=2)))
    sweep_file = tmp_path / "topk.sweep.yaml"
    sweep_file.write_text("compression.default.forward.topk: [1.0, 0.5]\n")
    assert cli([str(spec_file), "--sweep-file", str(sweep_file), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "== run 2/2: forward.topk=0.5" in out and out.count("done: 2 steps") == 2
    table = out[out.index("sweep point") :].splitlines()
    assert table[1].startswith("topk=1.0") and table[2].startswith("topk=0.5")
    assert json.loads((tmp_path / "out" / "01" / "summary.json").read_text())["compression_ratio"] > 1.0


def test_bf16_autocast_sends_half_the_bytes_and_still_learns():
    summary = train.run(tiny_spec(train__precision="bf16"))
    assert summary["wire_bytes_fwd_per_step"] == 1024  # bf16 activations: 2 bytes each
    assert summary["compression_ratio"] == pytest.approx(2.0)
    assert math.isfinite(summary["final_val_loss"])


def test_balance_splits_a_model_automatically():
    summary = train.run(tiny_spec(pipeline={"balance": 2, "microbatches": 2, "schedule": "1f1b"}, train__max_steps=2))
    assert summary["n_stages"] == 2
    assert [p for stage in summary["stages"] for p in stage] == ["flatten", "fc1", "act1", "fc2", "act2", "head"]


def test_summary_times_are_cpu_medians_and_its_replay_gives_the_modelled_time():
    summary = train.run(tiny_spec(train__max_steps=8, link={"bandwidth_mbps": 10, "latency_ms": 2}))
    assert summary["time_clock"] == "cpu" and summary["runner"] == "inproc"
    assert 0 < summary["time_per_batch_s"] <= summary["time_per_batch_p90_s"]
    assert summary["wall_time_per_batch_s"] > 0
    replay = Replay.from_json(json.loads(json.dumps(summary["replay"])))
    # tiny_mlp's 3 stages, gpipe over 2 micro-batches: 12 actions; 2 boundaries x 2 directions x 2 transfers of 512 B
    assert len(replay.actions) == 12 and all(t > 0 for t in replay.compute_s.values())
    assert set(replay.transfers.values()) == {(512, 1)}
    assert summary["modelled_time_per_batch_s"] == replay.plan(10, 2)["time_per_batch_s"]
    assert summary["one_device_time_per_batch_s"] == pytest.approx(sum(replay.compute_s.values()))
    assert summary["speedup_vs_one_device"] == pytest.approx(
        summary["one_device_time_per_batch_s"] / summary["modelled_time_per_batch_s"]
    )


def test_warmup_is_training_only_so_compressed_evaluation_stays_compressed():
    points = []
    spec = tiny_spec(compression={"default": {"forward": {"topk": 0.1, "warmup_steps": 100}}},
                     train__eval_compression="both")
    train.run(spec, on_metrics=points.extend)
    series = {(p["name"], p["step"]): p["value"] for p in points}
    # still in warm-up: fp32 payloads (values plus headers) where top-k 0.1 would send ~15%
    assert 1.0 < series[(names.WIRE_BYTES_FWD, 6)] / series[(names.WIRE_BYTES_BWD, 6)] < 1.25
    assert series[(names.VAL_LOSS, 6)] != series[(names.VAL_LOSS_DENSE, 6)]  # evaluation is compressed anyway


def test_ramped_warmup_shrinks_the_wire_step_by_step():
    points = []
    model = {"name": "tiny_mlp", "options": {"hidden": 256}}
    spec = tiny_spec(model=model, compression={"default": {"forward": {"topk": 0.05, "warmup": "ramp", "warmup_steps": 4}}})
    train.run(spec, on_metrics=points.extend)
    fwd = [p["value"] for p in points if p["name"] == names.WIRE_BYTES_FWD]
    assert fwd[0] > fwd[1] > fwd[2] > fwd[3] > fwd[4] == pytest.approx(fwd[5], rel=0.01)  # index codes vary a little


def test_adamw_leaves_biases_and_norm_weights_out_of_weight_decay():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    optimizer = train.make_optimizer(model, train.parse_spec(tiny_spec(optim={"name": "adamw", "weight_decay": 0.1})).optim)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert len(plain["params"]) == 4  # two biases, the LayerNorm's weight and bias


def test_boundary_cosines_and_the_delta_cache_are_reported():
    points = []
    spec = tiny_spec(compression={"default": {"forward": {"bits": 2, "feedback": "delta"}, "backward": {"bits": 2}}})
    summary = train.run(spec, on_metrics=points.extend)
    last = {p["name"]: p["value"] for p in points if p["step"] == 6}
    assert 0.5 < last[names.boundary_metric(0, "cos_bwd")] < 1.0
    assert 0.5 < last[names.boundary_metric(1, "cos_fwd")] < 1.0
    # 64 training samples seen, 16 hidden fp32 values each, both ends of 2 boundaries (val keys live elsewhere)
    assert last[names.CODEC_CACHE_BYTES] == summary["codec_cache_bytes"] == 64 * 16 * 4 * 2 * 2


def test_checkpoint_resume_continues_exactly_with_delta_and_a_ramp(tmp_path):
    spec = tiny_spec(
        compression={"default": {"forward": {"bits": 3, "rounding": "stochastic", "feedback": "delta"},
                                  "backward": {"topk": 0.3, "topk_mode": "random", "warmup": "ramp", "warmup_steps": 5}}},
        train__checkpoint_every=3,
    )
    straight = []
    train.run(spec, on_metrics=straight.extend, out_dir=tmp_path / "a")
    calls = []
    train.run(spec, out_dir=tmp_path / "b", should_stop=lambda: len(calls.append(1) or calls) > 3)
    resumed = []
    train.run(spec, on_metrics=resumed.extend, out_dir=tmp_path / "b", resume=True)
    losses = lambda points: {p["step"]: p["value"] for p in points if p["name"] == names.TRAIN_LOSS}  # noqa: E731
    assert losses(resumed) == {s: v for s, v in losses(straight).items() if s > 3}


def test_time_left_is_median_steps_and_evaluations_to_go():
    """Steps to go x the median step, evaluations to go x the median evaluation: the first step (compiling)
    and the evaluations' pauses do not inflate the steps' figure, as a rate since the start would."""
    left = train.TimeLeft(max_steps=10, eval_every=4)  # evaluations after steps 4, 8 and 10
    assert [left.evaluations_after(s) for s in (0, 3, 4, 7, 8, 9, 10)] == [3, 3, 2, 2, 1, 1, 0]
    left.record(now=30.0)  # step 1 ended 30 s in: compilation, left out
    assert left.seconds(1) is None
    left.record(now=31.0)  # steps 2, 3: 1 s each
    left.record(now=32.0)
    assert left.seconds(3) == 7 * 1.0  # no evaluation timed yet: counted as nothing
    left.record(eval_s=5.0, now=38.0)  # step 4: 1 s of training, 5 s of evaluation
    left.record(now=41.0)  # step 5: a slow one (3 s); the median holds
    assert left.seconds(5) == 5 * 1.0 + 2 * 5.0
    left.record(now=42.0)  # steps 6, 7
    left.record(now=43.0)
    left.record(eval_s=4.0, now=48.0)  # step 8: 1 s + 4 s
    left.record(now=49.0)  # step 9
    assert left.seconds(9) == 1 * 1.0 + 1 * 4.5  # the last step, the last evaluation (median of 5 and 4)
    left.record(eval_s=6.0, now=56.0)  # step 10
    assert left.seconds(10) == 0.0


def test_time_left_prices_an_evaluation_from_the_check_until_one_is_timed():
    """Before the first evaluation one costs check_evaluation's estimate; once timed, the measurement replaces it."""
    left = train.TimeLeft(max_steps=10, eval_every=5, eval_estimate_s=1.2)
    left.record(now=10.0)
    left.record(now=12.0)  # a 2 s step
    assert left.seconds(2) == 8 * 2.0 + 2 * 1.2
    left.record(eval_s=1.5, now=15.5)
    assert left.seconds(3) == 7 * 2.0 + 2 * 1.5
    assert train.TimeLeft(10, 5).seconds(0) is None


def test_evaluation_is_checked_on_one_batch_per_mode_before_the_first_step_and_prices_the_eta(monkeypatch):
    """The first validation batch in each mode, then again timed; batches x its time is the estimate; the
    check changes nothing the run trains or reports (the same losses and accuracies as without it)."""
    calls: list[tuple[str, bool, int]] = []
    real = train.Experiment.evaluate

    def recording(self, compressed, limit=0, batch_size=0):
        calls.append((compressed, limit, batch_size))
        return real(self, compressed, limit, batch_size)

    made: list[float] = []

    class Recording(train.TimeLeft):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.eval_estimate_s)

    monkeypatch.setattr(train.Experiment, "evaluate", recording)
    monkeypatch.setattr(train, "TimeLeft", Recording)
    lines: list[str] = []
    spec = tiny_spec(train={"max_steps": 6, "eval_every": 4, "eval_compression": "both"}, data__eval_batch_size=12)
    etas: list[float | None] = []
    points: list[dict] = []
    train.run(spec, on_log=lines.append, on_metrics=points.extend, on_progress=lambda step, total, eta: etas.append(eta))
    # compressed and dense: 8 samples, then the first two batches, then the evaluation points at steps 4 and 6
    assert calls == [(True, 1, 8), (False, 1, 8), (True, 2, 0), (False, 2, 0)] + [(True, 0, 0), (False, 0, 0)] * 2
    (line,) = [x for x in lines if x.startswith("evaluation checked")]
    assert "(compressed and dense) on the first 2 of 3 validation batches" in line  # 32 samples, batches of 12
    assert len(made) == 1 and made[0] > 0
    assert etas[0] is None and all(eta is not None and eta > 0 for eta in etas[1:-1]) and etas[-1] == 0.0

    monkeypatch.setattr(train, "check_evaluation", lambda exp, modes, log: 0.0)
    unchecked: list[dict] = []
    train.run(spec, on_metrics=unchecked.extend)
    figures = lambda ps: [(p["step"], p["name"], p["value"]) for p in ps if not p["name"].startswith("time/")]  # noqa: E731
    assert figures(points) == figures(unchecked)


def test_a_failing_evaluation_fails_the_run_before_its_first_step(monkeypatch):
    steps: list[int] = []
    real = train.Experiment.train_step
    monkeypatch.setattr(train.Experiment, "train_step", lambda self, step, lr: steps.append(step) or real(self, step, lr))

    def broken(self, compressed, limit=0, batch_size=0):
        raise RuntimeError("the classifier head returned 7 classes for 10 labels")

    monkeypatch.setattr(train.Experiment, "evaluate", broken)
    with pytest.raises(RuntimeError, match="7 classes"):
        train.run(tiny_spec(train={"max_steps": 50, "eval_every": 25}))
    assert steps == []


def test_checkpoints_every_n_steps_after_the_last_and_where_stopped(tmp_path):
    saved: list[int] = []
    real = train.save_checkpoint

    def recording(exp, step, path, progress=None):
        saved.append(step)
        real(exp, step, path, progress)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "save_checkpoint", recording)
        train.run(tiny_spec(train={"max_steps": 7, "eval_every": 3, "checkpoint_every": 3}), out_dir=tmp_path / "a")
        assert saved == [3, 6, 7]  # 7: the trained model, which a download should give
        saved.clear()
        calls: list[int] = []
        train.run(tiny_spec(train={"max_steps": 7, "eval_every": 3, "checkpoint_every": 3}), out_dir=tmp_path / "b",
                  should_stop=lambda: len(calls.append(1) or calls) > 5)
        assert saved == [3, 5]  # stopped after step 5: saved there, so a retry loses nothing
        saved.clear()
        calls.clear()
        train.run(tiny_spec(train={"max_steps": 7, "eval_every": 3, "checkpoint_every": 3}), out_dir=tmp_path / "c",
                  should_stop=lambda: len(calls.append(1) or calls) > 3)
        assert saved == [3]  # stopped right after a checkpoint: not saved twice
        saved.clear()
        train.run(tiny_spec(train={"max_steps": 4, "eval_every": 3}), out_dir=tmp_path / "d")
        assert saved == [] and not (tmp_path / "d" / "checkpoint.pt").exists()
    assert checkpoint.checkpoint_step(tmp_path / "b" / "checkpoint.pt") == 5
