"""slimpipe.timeline: the stored replay, the what-if plan and the one definition of speed-up (no torch)."""

import json

import pytest

from slimpipe.timeline import Replay, link_transfer, makespan, speedup, step_seconds
from worker.pipeline.schedule import gpipe, sequential


def three_stage_replay(schedule: str = "gpipe") -> Replay:
    actions = (gpipe if schedule == "gpipe" else sequential)(3, 2)
    compute = {(a.stage, a.op, a.microbatch): 0.01 * (1 + a.stage) * (2 if a.op == "B" else 1) for a in actions}
    transfers = {(b, op, mb): (250_000.0, 1) for b in (0, 1) for op in "FB" for mb in (0, 1)}
    transfers[(0, "F", 1)] = (500_000.0, 2)  # two messages: a tuple carry
    return Replay(schedule, actions, compute, transfers)


def test_replay_survives_json_exactly():
    replay = three_stage_replay()
    back = Replay.from_json(json.loads(json.dumps(replay.to_json())))
    assert back == replay


def test_plan_is_makespan_over_per_message_transfers():
    replay = three_stage_replay()
    link = {k: link_transfer(nbytes, 10, 2) for k, (nbytes, _) in replay.transfers.items()}  # messages back to back
    expected = makespan(replay.actions, replay.compute_s, link)
    plan = replay.plan(10, 2)
    assert plan["time_per_batch_s"] == pytest.approx(expected, rel=1e-12)
    assert plan["one_device_time_per_batch_s"] == pytest.approx(sum(replay.compute_s.values()))
    assert plan["speedup_vs_one_device"] == pytest.approx(sum(replay.compute_s.values()) / expected)
    assert plan["link_time_per_step_s"] == pytest.approx(sum(map(sum, link.values())))
    # 250 kB at 10 Mbit/s is 0.2 s per transfer: the slow link dominates, a fast one does not.
    assert plan["speedup_vs_one_device"] < 1 < replay.plan(10_000, 0)["speedup_vs_one_device"]


def test_a_sequential_run_has_no_link_and_speedup_one():
    plan = three_stage_replay("sequential").plan(10, 5)
    assert plan["time_per_batch_s"] == plan["one_device_time_per_batch_s"] and plan["speedup_vs_one_device"] == 1
    assert plan["link_time_per_step_s"] == 0


def test_speedup_uses_the_measured_time_of_distributed_runs_and_the_replay_of_inproc_ones():
    inproc = {"runner": "inproc", "time_per_batch_s": 9.0, "modelled_time_per_batch_s": 0.5}
    distributed = {"runner": "distributed", "time_per_batch_s": 0.25, "modelled_time_per_batch_s": 9.0}
    logged = {"time_per_batch_s": 0.3, "link_time_per_step_s": 0.2}  # logged over REST by another trainer
    assert [step_seconds(s) for s in (inproc, distributed, logged, {}, None)] == [0.5, 0.25, 0.5, None, None]
    assert speedup(inproc, distributed) == 2.0 and speedup(logged, inproc) == 1.0
    assert speedup(None, inproc) is None and speedup(inproc, {"time_per_batch_s": None}) is None
