import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.codecs import indexset
from worker.codecs.wire import CodecError


def _random_set(n: int, ratio: float, seed: int = 0) -> np.ndarray:
    return np.flatnonzero(np.random.default_rng(seed).random(n) < ratio)


@pytest.mark.parametrize("ratio", [0.001, 0.01, 0.05, 0.1, 0.3, 0.7, 0.9, 0.99])
def test_cost_is_within_15_percent_of_the_binary_entropy_bound(ratio):
    n = 200_000
    idx = _random_set(n, ratio)
    section = indexset.encode(idx, n)
    bound = n * indexset.binary_entropy(idx.size / n)
    header = 24
    assert (len(section) - header) * 8 <= 1.15 * bound
    assert np.array_equal(indexset.decode(memoryview(section), n, idx.size), idx)


def test_half_kept_uses_the_bitmap():
    n = 10_000
    idx = _random_set(n, 0.5)
    section = indexset.encode(idx, n)
    assert section[0] == indexset.BITMAP and len(section) == 24 + n // 8


@pytest.mark.parametrize("ratio", [0.02, 0.5, 0.95])
def test_torch_bytes_match_numpy_bytes_both_ways(ratio):
    n = 5000
    idx = _random_set(n, ratio, 1)
    section = indexset.encode(idx, n)
    assert indexset.encode_torch(torch.from_numpy(idx), n) == section
    assert torch.equal(indexset.decode_torch(memoryview(section), n, idx.size, "cpu"), torch.from_numpy(idx))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), data=st.data())
def test_round_trip_property(n, data):
    positions = data.draw(st.sets(st.integers(0, n - 1), max_size=n))
    idx = np.array(sorted(positions), dtype=np.int64)
    section = indexset.encode(idx, n)
    assert np.array_equal(indexset.decode(memoryview(section), n, idx.size), idx)


def test_wrong_count_is_refused():
    section = indexset.encode(np.array([3, 9, 40]), 100)
    with pytest.raises(CodecError, match="positions|gaps"):
        indexset.decode(memoryview(section), 100, 4)


@pytest.mark.parametrize("cut", [5, 25, -1])
def test_truncated_section_is_refused(cut):
    section = indexset.encode(_random_set(1000, 0.05), 1000)
    with pytest.raises(CodecError):
        indexset.decode(memoryview(section[:cut]), 1000, 50)


def test_binary_entropy_values():
    assert indexset.binary_entropy(0.5) == 1.0
    assert indexset.binary_entropy(0.0) == 0.0
    assert abs(indexset.binary_entropy(0.1) - 0.4690) < 1e-4


def test_positions_that_are_not_a_sorted_set_in_range_are_refused_not_written_past_the_end():
    n = 64
    for bad in ([3, 3, 9] + list(range(10, 40)), [0, 1, 1] + list(range(3, 64)), list(range(30, 64)) + [64, 65]):
        with pytest.raises(CodecError, match="sorted, unique and in|must lie in"):
            indexset.encode(np.array(bad, dtype=np.int64), n)
    for bad in ([-1000, 5], [2, 1], [4, 4], [1, 64]):  # Rice-coded gaps
        with pytest.raises(CodecError, match="sorted, unique and in"):
            indexset.encode(np.array(bad), 64)
    assert indexset.complement_of(np.array([0, 2, 5]), 7).tolist() == [1, 3, 4, 6]  # numpy's mask
    assert indexset.complement_of(np.arange(7), 7).tolist() == []  # the run-filling kernel, from here down
    assert indexset.complement_of(np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 10]), 11).tolist() == [8]
    assert indexset.complement_of(np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), 11).tolist() == [0]
    with pytest.raises(CodecError, match="sorted, unique and in"):
        indexset.complement_of(np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 8]), 10)


def test_a_bitmap_with_more_positions_than_its_count_is_refused_and_bits_past_n_are_ignored():
    n = 100
    idx = _random_set(n, 0.5, 3)
    section = bytearray(indexset.encode(idx, n))
    assert section[0] == indexset.BITMAP
    section[-1] |= 0xF0  # bits 100..103: past n, as np.unpackbits(count=n) ignored them
    assert np.array_equal(indexset.decode(memoryview(bytes(section)), n, idx.size), idx)
    spare = int(np.setdiff1d(np.arange(n), idx)[0])
    section[24 + spare // 8] |= 1 << (spare % 8)
    with pytest.raises(CodecError, match="bitmap holds more than"):
        indexset.decode(memoryview(bytes(section)), n, idx.size)
    with pytest.raises(CodecError, match="bitmap holds"):
        indexset.decode(memoryview(bytes(section)), n, idx.size + 5)
