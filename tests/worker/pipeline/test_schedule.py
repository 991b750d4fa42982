"""Schedules are pure tables: exact clocks, every action once, dependencies respected."""

import pytest

from worker.pipeline.schedule import (
    SCHEDULES,
    Action,
    ScheduleError,
    get_schedule,
    gpipe,
    one_f_one_b,
    render,
    sequential,
)


def test_action_has_compact_string_form():
    assert str(Action(clock=4, stage=2, op="F", microbatch=0)) == "2F0"
    assert str(Action(7, 0, "B", 3)) == "0B3"


def test_gpipe_three_stages_three_microbatches_is_fill_then_drain():
    assert render(gpipe(3, 3)).splitlines() == [
        "0F0",
        "0F1  1F0",
        "0F2  1F1  2F0",
        "     1F2  2F1",
        "          2F2",
        "          2B0",
        "     1B0  2B1",
        "0B0  1B1  2B2",
        "0B1  1B2",
        "0B2",
    ]


def test_1f1b_interleaves_after_warmup_and_bounds_inflight_microbatches():
    actions = one_f_one_b(3, 4)
    by_stage = {j: [f"{a.op}{a.microbatch}" for a in actions if a.stage == j] for j in range(3)}
    assert by_stage[0] == ["F0", "F1", "F2", "B0", "F3", "B1", "B2", "B3"]
    assert by_stage[1] == ["F0", "F1", "B0", "F2", "B1", "F3", "B2", "B3"]
    assert by_stage[2] == ["F0", "B0", "F1", "B1", "F2", "B2", "F3", "B3"]
    # Stage j never holds more than n - j micro-batches' activations (GPipe holds all m).
    for j in range(3):
        inflight = peak = 0
        for a in (a for a in actions if a.stage == j):
            inflight += 1 if a.op == "F" else -1
            peak = max(peak, inflight)
        assert peak == min(3 - j, 4)


def test_sequential_runs_one_action_per_clock_microbatch_by_microbatch():
    assert [str(a) for a in sequential(2, 2)] == ["0F0", "1F0", "1B0", "0B0", "0F1", "1F1", "1B1", "0B1"]
    assert [a.clock for a in sequential(2, 2)] == list(range(8))


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize(("n", "m"), [(1, 1), (1, 4), (2, 1), (3, 4), (5, 4), (4, 7)])
def test_every_schedule_runs_each_action_once_in_dependency_order(name, n, m):
    actions = get_schedule(name)(n, m)
    assert sorted((a.stage, a.op, a.microbatch) for a in actions) == sorted(
        (j, op, i) for j in range(n) for op in "FB" for i in range(m)
    )
    clock = {(a.stage, a.op, a.microbatch): a.clock for a in actions}
    for (j, op, i), c in clock.items():
        if op == "F" and j > 0:
            assert c > clock[(j - 1, "F", i)]
        if op == "B":
            assert c > clock[(j, "F", i)]
            if j < n - 1:
                assert c > clock[(j + 1, "B", i)]
    per_clock_stage = [(a.clock, a.stage) for a in actions]
    assert len(per_clock_stage) == len(set(per_clock_stage))


@pytest.mark.parametrize(("n", "m"), [(3, 4), (5, 4), (4, 8)])
def test_gpipe_and_1f1b_take_2_times_m_plus_n_minus_1_clocks(n, m):
    assert max(a.clock for a in gpipe(n, m)) + 1 == 2 * (m + n - 1)
    assert max(a.clock for a in one_f_one_b(n, m)) + 1 == 2 * (m + n - 1)


def test_unknown_schedule_names_the_choices():
    with pytest.raises(ScheduleError, match="choose one of sequential, gpipe, 1f1b"):
        get_schedule("interleaved")
    with pytest.raises(ScheduleError, match="at least one"):
        gpipe(0, 4)
