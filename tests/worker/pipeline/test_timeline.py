"""The modelled time per batch: pipeline makespan with a latency + bandwidth link."""

import pytest

from worker.pipeline.schedule import gpipe, one_f_one_b, sequential
from worker.pipeline.timeline import Transfer, link_transfer, makespan


def unit(actions, seconds=1.0):
    return {(a.stage, a.op, a.microbatch): seconds for a in actions}


def test_transfer_is_latency_plus_bytes_over_bandwidth():
    assert sum(link_transfer(1_250_000, bandwidth_mbps=10, latency_ms=2)) == pytest.approx(1.002)
    assert sum(link_transfer(0, 100, 0)) == 0


def test_gpipe_with_free_link_takes_one_clock_per_table_row():
    actions = gpipe(3, 4)
    assert makespan(actions, unit(actions), {}) == pytest.approx(12.0)
    assert makespan(one_f_one_b(3, 4), unit(actions), {}) == pytest.approx(12.0)


def test_sequential_is_the_sum_of_all_compute():
    actions = sequential(3, 4)
    assert makespan(actions, unit(actions, 0.5), {}, serial=True) == pytest.approx(12.0)


def test_transfers_on_the_critical_path_add_once_per_boundary_each_way():
    actions = gpipe(3, 4)
    transfers = {(b, op, i): 0.5 for b in range(2) for op in "FB" for i in range(4)}
    # 2 boundaries forward + 2 backward on the critical path, the rest overlaps with compute.
    assert makespan(actions, unit(actions), transfers) == pytest.approx(14.0)


def test_a_slow_link_serialises_transfers_and_dominates():
    actions = gpipe(2, 4)
    transfers = {(0, op, i): 3.0 for op in "FB" for i in range(4)}
    # forward: F0 ends at 1, four 3 s transfers back to back arrive at 4,7,10,13; last F ends 14;
    # backward: 1B0 runs 14..15, four gradient transfers back to back arrive at 18, 21, 24, 27; 0B3 ends at 28.
    assert makespan(actions, unit(actions), transfers) == pytest.approx(28.0)


def test_latency_is_in_flight_time_not_link_time():
    actions = gpipe(2, 4)
    transfers = {(0, op, i): Transfer(busy_s=0.0, delay_s=3.0) for op in "FB" for i in range(4)}
    # the four activations are in flight together: 1F0..1F3 at 4, 5, 6, 7 (each 3 s after its 0Fi);
    # 1B0..1B3 run 8..12, their gradients arrive 3 s later: 0B3 starts at 15 and ends at 16.
    assert makespan(actions, unit(actions), transfers) == pytest.approx(16.0)
    stop_and_wait = {key: t.busy_s + t.delay_s for key, t in transfers.items()}
    assert makespan(actions, unit(actions), stop_and_wait) == pytest.approx(28.0)


def test_a_link_transfer_is_bytes_over_bandwidth_then_latency():
    t = link_transfer(1_250_000, bandwidth_mbps=10, latency_ms=2)
    assert t == Transfer(pytest.approx(1.0), pytest.approx(0.002))
