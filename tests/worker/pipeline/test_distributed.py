"""The distributed runner (one process per stage over gloo) against the in-process runner, and its faults.

Same spec and seed: every rank builds the same model and batches, the codecs write the same bytes, so the
per-step losses agree — to 1e-9 in float64 with compression off, and with a deterministic codec on.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest
import torch

from slimpipe import names
from slimpipe.spec import parse_spec
from worker import checkpoint, train
from worker.pipeline.launch import StageFailed

pytestmark = pytest.mark.slow

MLP_3 = [["flatten", "fc1", "act1"], ["fc2", "act2"], ["head"]]
TINY_ROBERTA = {
    "config": {
        "model_type": "roberta",
        "vocab_size": 1200,
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 40,
        # each stage process draws its own dropout masks, so equality needs dropout off
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
}
TOPK_8BIT = {"topk": 0.5, "bits": 8}


def spec(runner: str, schedule: str = "gpipe", compression: dict | None = None, **train_options) -> dict:
    return {
        "model": {"name": "tiny_mlp", "options": {"hidden": 32}},
        "data": {"name": "digits", "batch_size": 32},
        "pipeline": {"stages": MLP_3, "microbatches": 4, "schedule": schedule, "runner": runner},
        "compression": {"default": compression or {}},
        "link": {"emulate": False},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"max_steps": 4, "eval_every": 2, "threads": 1, "seed": 3, **train_options},
    }


def losses(spec_data: dict, tmp_path, **kwargs) -> tuple[list[float], list[float], dict]:
    points: list[dict] = []
    summary = train.run(spec_data, on_metrics=points.extend, out_dir=tmp_path, **kwargs)
    by_name = lambda name: [p["value"] for p in sorted(points, key=lambda p: p["step"]) if p["name"] == name]  # noqa: E731
    return by_name(names.TRAIN_LOSS), by_name(names.VAL_LOSS), summary


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_same_losses_as_inproc_float64_compression_off(schedule, tmp_path):
    import sys

    hook = sys.excepthook
    ref_train, ref_val, _ = losses(spec("inproc", schedule, precision="fp64"), tmp_path / "inproc")
    got_train, got_val, summary = losses(spec("distributed", schedule, precision="fp64"), tmp_path / "dist")
    assert sys.excepthook is hook  # torch's "[rank0]: " wrapper, one more per run, is undone
    assert len(got_train) == 4 and len(got_val) == 2
    assert got_train == pytest.approx(ref_train, rel=1e-9, abs=1e-9)
    assert got_val == pytest.approx(ref_val, rel=1e-9, abs=1e-9)
    assert summary["runner"] == "distributed" and summary["n_stages"] == 3


def test_deferred_batch_norm_built_on_meta_trains_and_evaluates_as_inproc(tmp_path):
    """Stage processes build their DeferredBatchNorms on the meta device; the running statistics come from
    rank 0 and the validation loss (which uses them) is in-process's to the last bit, in float64."""
    def bn_spec(runner: str) -> dict:
        return {**spec(runner, precision="fp64"), "model": {"name": "tiny_cnn", "options": {"batchnorm": True}},
                "pipeline": {"microbatches": 4, "schedule": "gpipe", "runner": runner, "deferred_bn": True}}

    ref_train, ref_val, _ = losses(bn_spec("inproc"), tmp_path / "inproc")
    got_train, got_val, summary = losses(bn_spec("distributed"), tmp_path / "dist")
    assert summary["n_stages"] == 3 and len(got_val) == 2
    assert got_train == ref_train and got_val == ref_val


def test_every_stage_evaluates_the_batches_rank_0_asks_for_as_inproc_does(tmp_path):
    """The evaluation check's limits (8 samples; the first two batches) reach every stage process: the
    figures are in-process's, in float64; the gap between the last two batches' ends comes back from the
    last stage."""
    compression = {"forward": TOPK_8BIT, "backward": TOPK_8BIT}
    figures = {}
    for runner in ("inproc", "distributed"):
        exp = train.make_experiment(parse_spec(spec(runner, compression=compression, precision="fp64")),
                                    tmp_path / runner, None, lambda line: None)
        try:
            got = []
            for limit, batch_size in ((1, 8), (2, 0), (0, 0)):
                both = exp.evaluate(True, limit, batch_size), exp.evaluate(False, limit, batch_size)
                for ev in both:
                    assert (ev.gap_s is None) if limit == 1 else (ev.gap_s is not None and ev.gap_s > 0)
                got.append([(ev.loss, ev.acc) for ev in both])
            figures[runner] = got
        finally:
            exp.close()
    assert figures["distributed"] == figures["inproc"]
    assert figures["inproc"][0] != figures["inproc"][1] != figures["inproc"][2]  # 8 samples, 64, the whole split


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_same_losses_and_bytes_as_inproc_with_topk_and_8_bit(schedule, tmp_path):
    compression = {"forward": TOPK_8BIT, "backward": TOPK_8BIT}
    ref_train, ref_val, ref = losses(spec("inproc", schedule, compression), tmp_path / "inproc")
    got_train, got_val, summary = losses(spec("distributed", schedule, compression), tmp_path / "dist")
    assert got_train == pytest.approx(ref_train, rel=1e-6)
    assert got_val == pytest.approx(ref_val, rel=1e-6)
    # the same payloads cross; the distributed message adds its frame (2 + 4 bytes per tensor)
    per_step_messages = 2 * 2 * 4  # boundaries x directions x micro-batches
    assert summary["wire_bytes_per_step"] == ref["wire_bytes_per_step"] + 6 * per_step_messages
    assert summary["compression_ratio"] > 3


def test_boundary_errors_are_reported_where_measured_and_equal_inprocs(tmp_path):
    """Distributed stages measure error on evaluation steps only (eval_every 2: steps 1 and 3); the other
    steps carry no error rather than a 0 and a cosine of 1. Where measured, the figures are in-process's."""
    compression = {"forward": TOPK_8BIT, "backward": TOPK_8BIT}

    def series(runner: str) -> dict[str, dict[int, float]]:
        points: list[dict] = []
        train.run(spec(runner, "gpipe", compression), on_metrics=points.extend, out_dir=tmp_path / runner)
        out: dict[str, dict[int, float]] = {}
        for p in points:
            out.setdefault(p["name"], {})[p["step"]] = p["value"]
        return out

    inproc, dist = series("inproc"), series("distributed")
    for b in range(2):
        for what in ("err_fwd", "err_bwd", "cos_fwd", "cos_bwd"):
            name = names.boundary_metric(b, what)
            assert sorted(inproc[name]) == [1, 2, 3, 4] and sorted(dist[name]) == [1, 3], name
            assert [dist[name][s] for s in (1, 3)] == pytest.approx([inproc[name][s] for s in (1, 3)], rel=1e-5), name
        assert 0 < dist[names.boundary_metric(b, "err_fwd")][1] < 1 and sorted(dist[names.boundary_metric(b, "bytes_fwd")]) == [1, 2, 3, 4]


def test_transformer_carry_crosses_as_a_tuple(tmp_path):
    data = {
        "model": {"name": "hf_classifier", "options": TINY_ROBERTA},
        "data": {"name": "synthetic_text", "options": {"n_train": 32, "n_val": 8}, "batch_size": 8, "max_length": 16},
        "pipeline": {"stages": [["roberta.embeddings"], ["roberta.encoder.layer[0:2]", "classifier"]],
                     "microbatches": 2},
        "compression": {"default": {"forward": {"bits": 8}, "backward": {"bits": 8}}},
        "link": {"emulate": False},
        "optim": {"name": "adamw", "lr": 1e-3},
        "train": {"max_steps": 3, "eval_every": 3, "threads": 1},
    }
    ref_train, ref_val, _ = losses(data, tmp_path / "inproc")
    data["pipeline"]["runner"] = "distributed"
    got_train, got_val, _ = losses(data, tmp_path / "dist")
    assert got_train == pytest.approx(ref_train, rel=1e-5)
    assert got_val == pytest.approx(ref_val, rel=1e-5)


def test_measured_figures_and_timeline_are_reported(tmp_path):
    points: list[dict] = []
    summary = train.run(spec("distributed"), on_metrics=points.extend, out_dir=tmp_path)
    stage_series = {p["name"] for p in points if p["name"].startswith("stage/")}
    assert stage_series == {names.stage_metric(j, w) for j in range(3)
                            for w in ("compute_s", "recv_wait_s", "send_s", "idle_s")}
    assert 0 <= summary["bubble_fraction"] < 1
    assert summary["time_per_batch_p90_s"] >= summary["time_per_batch_s"] > 0
    timeline = summary["timeline"]
    assert timeline["step"] == 4
    measured = timeline["measured"]
    assert sorted((s, op, mb) for s, op, mb, _, _ in measured) == sorted(
        (s, op, mb) for s in range(3) for op in "FB" for mb in range(4)
    )
    assert all(end >= start >= 0 for *_, start, end in measured)
    # a stage's forward of micro-batch i starts after the previous stage's forward of i ended
    start = {(s, op, mb): (a, b) for s, op, mb, a, b in measured}
    assert all(start[(1, "F", i)][0] >= start[(0, "F", i)][1] for i in range(4))
    assert len(timeline["modelled"]) == len(measured)


def test_emulated_link_slows_the_step_by_its_latency(tmp_path):
    fast = train.run(spec("distributed", max_steps=6), out_dir=tmp_path / "fast")
    slow_spec = spec("distributed", max_steps=6)
    slow_spec["link"] = {"bandwidth_mbps": 1000, "latency_ms": 25}
    slow = train.run(slow_spec, out_dir=tmp_path / "slow")
    # the last micro-batch crosses 4 links on its way (2 forward, 2 backward): 25 ms each, at least
    assert slow["time_per_batch_s"] > 4 * 0.025
    assert slow["time_per_batch_s"] > fast["time_per_batch_s"]
    assert slow["wire_bytes_per_step"] == fast["wire_bytes_per_step"]


def _stage_pids(workdir) -> dict[int, int]:
    """Live stage processes of the run whose files are in `workdir`: pid -> rank (orphans included)."""
    spec_path = str(workdir / "stage-spec.json").encode()
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                zombie = f.read().rsplit(") ", 1)[1].startswith("Z")
        except OSError:
            continue
        if b"worker.stage" in argv and spec_path in argv and not zombie:
            found[int(pid)] = int(argv[argv.index(spec_path) + 1])
    return found


def test_killing_a_stage_fails_the_run_naming_it_and_leaves_no_process(tmp_path):
    killed: list[int] = []

    def kill_stage_2(step: int, total: int, eta_s: float | None) -> None:
        if step == 2 and not killed:
            victims = [pid for pid, rank in _stage_pids(tmp_path).items() if rank == 2]
            assert len(victims) == 1
            os.kill(victims[0], signal.SIGKILL)
            killed.append(victims[0])

    with pytest.raises(StageFailed, match=r"stage 2 \(pid \d+\) was killed by SIGKILL"):
        train.run(spec("distributed", max_steps=200), on_progress=kill_stage_2, out_dir=tmp_path)
    assert killed
    assert _stage_pids(tmp_path) == {}


def test_cancel_ends_every_stage_within_5_s(tmp_path):
    stop = threading.Event()
    asked_at: list[float] = []

    def on_progress(step: int, total: int, eta_s: float | None) -> None:
        if step == 3:
            asked_at.append(time.monotonic())
            stop.set()

    data = spec("distributed", max_steps=10_000)
    data["link"] = {"bandwidth_mbps": 100, "latency_ms": 20}
    summary = train.run(data, on_progress=on_progress, should_stop=stop.is_set, out_dir=tmp_path)
    assert summary["cancelled"] is True and summary["steps"] == 3
    assert time.monotonic() - asked_at[0] < 5
    assert _stage_pids(tmp_path) == {}


def test_spec_with_default_partition_runs_distributed(tmp_path):
    data = spec("distributed", max_steps=2)
    data["pipeline"].pop("stages")
    assert parse_spec(data).n_stages is None
    lines: list[str] = []
    summary = train.run(data, out_dir=tmp_path, on_log=lines.append)
    assert summary["steps"] == 2 and summary["n_stages"] == len(summary["stages"]) >= 2
    ready = [line for line in lines if "stage processes ready" in line]
    assert len(ready) == 1 and ready[0].startswith(f"all {summary['n_stages']} stage processes ready in ")


def test_feedback_caches_are_counted_in_every_stage_process(tmp_path):
    """Each codec end keeps its per-sample cache in the process that runs it; rank 0 alone holds a
    quarter of them here, so the figure is gathered from every stage, and equals the in-process one."""
    compression = {"forward": {"bits": 2, "feedback": "delta"}, "backward": {"bits": 2}}

    def cache(runner: str) -> tuple[float, int]:
        points: list[dict] = []
        summary = train.run(spec(runner, "gpipe", compression), on_metrics=points.extend, out_dir=tmp_path / runner)
        last = max(p["step"] for p in points)
        step = next(p["value"] for p in points if p["step"] == last and p["name"] == names.CODEC_CACHE_BYTES)
        return step, summary["codec_cache_bytes"]

    inproc, dist = cache("inproc"), cache("distributed")
    # 4 steps x 32 samples seen, 32 hidden fp32 values (fc1's and fc2's outputs), both ends of 2 boundaries
    assert inproc == dist == (4 * 32 * 32 * 4 * 2 * 2,) * 2


def test_stages_start_from_rank_0s_weights_and_no_process_holds_the_whole_model_but_rank_0(tmp_path):
    """worker.stage builds rank k on the meta device (no weight at all, not even its own stage's) until
    rank 0 sends stage k; rank 0 keeps stage 0 and releases the rest. Every stage then holds exactly the
    weights a process that builds the whole model starts from (float64 here: received, then cast)."""
    data = spec("distributed", precision="fp64")
    full = train.Experiment(parse_spec(data))
    for rank in range(3):
        shell = train.Experiment(parse_spec(data), only_stage=rank, on_meta=True)  # what worker.stage.build makes
        assert all(t.is_meta for t in [*shell.model.parameters(), *shell.model.buffers()])
        assert [p.shape for p in shell.stages[rank].parameters()] == [p.shape for p in full.stages[rank].parameters()]
        assert {id(p) for group in shell.optimizer.param_groups for p in group["params"]} == {
            id(p) for p in shell.stages[rank].parameters()}  # the objects the received weights are swapped into
    lines: list[str] = []
    exp = train.DistributedExperiment(parse_spec(data), tmp_path, log=lines.append)
    try:
        assert {id(p) for p in exp.model.parameters() if not p.is_meta} == {id(p) for p in exp.stages[0].parameters()}
        sizes = [sum(t.numel() * t.element_size() for t in [*s.parameters(), *s.buffers()]) for s in full.stages]
        assert re.fullmatch(rf"initial weights of stages 1-2 sent in \d+\.\d s \({(sizes[1] + sizes[2]) / 2e6:.1f} MB\)",
                            lines[-1]), lines  # full is fp64; rank 0 sends its fp32 weights: half the bytes
        exp.save_checkpoint(tmp_path / "checkpoint.pt", 0, {})
    finally:
        exp.close()
    weights, reference = checkpoint.model_state(data, tmp_path), full.model.state_dict()
    assert list(weights) == list(reference)
    assert all(weights[k].dtype == torch.float64 and torch.equal(weights[k], reference[k]) for k in weights)


def test_a_stage_that_built_other_modules_than_rank_0_is_refused_naming_them():
    from torch import nn

    from worker.pipeline.distributed import check_manifest, read_manifest

    mine = [("blocks.0.weight", nn.Parameter(torch.empty(4, 3))), ("blocks.0.bias", nn.Parameter(torch.empty(4)))]
    check_manifest(2, mine, [("blocks.0.weight", torch.float32, (4, 3)), ("blocks.0.bias", torch.float32, (4,))])
    with pytest.raises(ValueError, match=r"stage 2 and rank 0 built different modules \(blocks.0.bias, blocks.0.weight "
                                         r"differ\): every worker of a distributed run needs the same model files"):
        check_manifest(2, mine, [("blocks.0.weight", torch.float32, (4, 5)), ("blocks.0.bias", torch.float32, (5,))])
    with pytest.raises(ValueError, match=r"\(the same tensors in another order\)"):
        check_manifest(2, mine, [("blocks.0.bias", torch.float32, (4,)), ("blocks.0.weight", torch.float32, (4, 3))])
    with pytest.raises(ValueError, match=r"\(blocks.1.weight differ\)"):
        check_manifest(2, mine, [*[(n, t.dtype, tuple(t.shape)) for n, t in mine], ("blocks.1.weight", torch.float32, (4,))])
    # The listing is JSON: a dtype is a torch dtype's name, nothing else of torch's.
    assert read_manifest(b'[["w", "bfloat16", [2, 3]], ["n", "int64", []]]') == [
        ("w", torch.bfloat16, (2, 3)), ("n", torch.int64, ())]
    for bad in (b'[["w", "load", [2]]]', b'[["w", "float32", [-1]]]', b'[["w", "float32", [2.5]]]', b'[["w", "float32", 3]]'):
        with pytest.raises(ValueError, match="rank 0 sent 'w' as .* not a tensor this stage can take"):
            read_manifest(bad)


def test_release_weights_keeps_a_weight_tied_across_stages():
    from torch import nn

    # A weight tied across stages stays where the kept stage uses it.
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(2, 3))
    train.release_weights(model, keep=nn.Sequential(model[2]))
    assert not model[0].weight.is_meta and model[3].weight.is_meta and model[3].bias.is_meta
    assert isinstance(model[3].weight, nn.Parameter) and model[3].weight.requires_grad


def test_a_distributed_run_resumes_exactly_from_its_stages_checkpoints(tmp_path):
    data = spec("distributed", compression={"forward": TOPK_8BIT, "backward": TOPK_8BIT}, max_steps=6, checkpoint_every=3)
    straight, _, _ = losses(data, tmp_path / "straight")
    calls: list[int] = []
    stopped = train.run(data, out_dir=tmp_path / "b", should_stop=lambda: len(calls.append(1) or calls) > 4)
    # stopped after step 4: the stop itself saved (every stage), not only step 3's checkpoint
    assert stopped["steps"] == 4 and checkpoint.checkpoint_step(tmp_path / "b" / "checkpoint.pt") == 4
    assert sorted(p.name for p in (tmp_path / "b").glob("checkpoint*.pt")) == [
        "checkpoint.pt", "checkpoint.stage0.pt", "checkpoint.stage1.pt", "checkpoint.stage2.pt"
    ]
    resumed, _, summary = losses(data, tmp_path / "b", resume=True)
    assert summary["steps"] == 6
    assert resumed == straight[4:]

    # The stages' files make the whole model's state dict, under the model's own names: the same weights
    # as the straight run's, and as an in-process run's of the same spec.
    weights = checkpoint.model_state(data, tmp_path / "b")
    assert list(weights) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "head.weight", "head.bias"]
    straight_weights = checkpoint.model_state(data, tmp_path / "straight")
    assert all(torch.equal(weights[k], straight_weights[k]) for k in weights)
    inproc = {**data, "pipeline": {**data["pipeline"], "runner": "inproc"}}
    train.run(inproc, out_dir=tmp_path / "inproc")
    reference = checkpoint.model_state(inproc, tmp_path / "inproc")
    assert all(torch.allclose(weights[k], reference[k], atol=1e-5) for k in weights)
    # A stage file of another step is refused, naming it.
    stale = torch.load(tmp_path / "b" / "checkpoint.stage1.pt", weights_only=True)
    torch.save({**stale, "step": 3}, tmp_path / "b" / "checkpoint.stage1.pt")
    with pytest.raises(ValueError, match="checkpoint.stage1.pt is of step 3, checkpoint.pt of 6"):
        checkpoint.model_state(data, tmp_path / "b")


def test_stage_memory_bench_reports_every_rank(tmp_path, capsys):
    import json

    from benchmarks import stage_memory

    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec("distributed", max_steps=2)))
    assert stage_memory.main([str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in lines[2:6]}
    assert sorted(rows) == ["0", "1", "2", "all"]
    assert all(peak >= last > 50 for peak, last in rows.values())  # torch alone is more than 50 MiB
    assert rows["all"][0] == pytest.approx(sum(rows[r][0] for r in "012"), abs=2)
    assert lines[-1].startswith("all 3 stage processes ready in")


def test_a_stage_that_dies_of_an_exception_is_named_with_it(tmp_path, capfd):
    """The run's error says what the stage died of, not only its exit code; its stderr still reaches ours."""
    from worker.pipeline import launch

    store = launch.open_store()
    stages = launch.LocalStages({"model": {"name": "nope"}}, [1], 2, host="127.0.0.1", port=store.port, threads=1,
                                workdir=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while stages.failure is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stages.close(grace_s=0.0)
    assert stages.failure is not None
    assert re.fullmatch(r"stage 1 \(pid \d+\) exited with code 1: slimpipe\.spec\.SpecError: model\.name: unknown "
                        r"model 'nope'; choose one of .*", stages.failure), stages.failure
    assert "Traceback (most recent call last)" in capfd.readouterr().err


def test_last_exception_is_the_tracebacks_last_line_or_nothing():
    from worker.pipeline.launch import last_exception

    assert last_exception(["Traceback (most recent call last):", '  File "x.py", line 1', "[rank2]: ValueError: bad", ""]) == "ValueError: bad"
    assert last_exception(["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"]) == (
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert last_exception(["KeyboardInterrupt"]) is None  # not an Error line: no reason rather than a wrong one
    assert last_exception(["RuntimeError: first", "some later log line"]) is None
    assert last_exception([]) is None


def test_slimpipe_train_says_which_stage_died_and_of_what(tmp_path, capsys, monkeypatch):
    """Rank 0 sends a listing the stages cannot take: they die of the ValueError, and the command ends with
    one line naming the stage and the exception, exit code 1, no traceback of rank 0's."""
    import argparse
    import json

    import torch.distributed as dist

    from worker import train_cli
    from worker.pipeline import distributed

    def send_a_wrong_listing(self) -> int:
        blob = torch.frombuffer(bytearray(b'[["nope", "float32", [1]]]'), dtype=torch.uint8)
        for rank in range(1, self.world):
            dist.send(torch.tensor([blob.numel()]), dst=rank, group=self.control)
            dist.send(blob, dst=rank, group=self.control)
        return 0

    monkeypatch.setattr(distributed.StageProgram, "send_weights", send_a_wrong_listing)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec("distributed")))
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    assert train_cli.run(parser.parse_args([str(path), "--out", str(tmp_path / "out"), "--no-progress"])) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"slimpipe: stage ([12]) \(pid \d+\) exited with code 1: ValueError: stage \1 and rank 0 built "
                        r"different modules \(.*nope.*\): every worker .*", last), last
    assert "[rank0]" not in err and "Traceback" in err  # the stage's traceback, relayed; none of rank 0's
    assert _stage_pids(tmp_path / "out") == {}
