import numpy as np
import pytest
import torch

from worker.codecs import topk


def _check_selection(x: np.ndarray, idx: np.ndarray, vals: np.ndarray, k: int, tolerance: float) -> None:
    assert abs(idx.size - k) <= tolerance * k
    assert np.all(np.diff(idx) > 0)
    assert np.array_equal(vals, x[idx])
    dropped = np.ones(x.size, dtype=bool)
    dropped[idx] = False
    if dropped.any() and idx.size:
        assert np.abs(vals).min() >= np.abs(x[dropped]).max()  # every kept |x| >= every dropped |x|


@pytest.mark.parametrize("ratio", [0.001, 0.01, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("kind", ["gaussian", "heavy", "outliers"])
def test_sampled_threshold_keeps_the_largest_within_one_percent(ratio, kind):
    rng = np.random.default_rng(3)
    n = 2 * topk.EXACT_BELOW  # the sampled path runs
    x = {"gaussian": rng.standard_normal(n), "heavy": rng.standard_t(2, n),
         "outliers": rng.standard_normal(n) * np.where(np.arange(n) % 512 < 4, 40.0, 1.0)}[kind].astype(np.float32)
    k = topk.keep_count(ratio, n)
    idx, vals = topk.select(x, k, np.random.default_rng(0))
    _check_selection(x, idx, vals, k, 0.01)


def test_ties_fall_back_to_an_exact_selection():
    n = 2 * topk.EXACT_BELOW
    x = np.ones(n, dtype=np.float32)
    x[::7] = -1.0
    idx, vals = topk.select(x, 1000, np.random.default_rng(0))
    _check_selection(x, idx, vals, 1000, 0.0)


@pytest.mark.parametrize("n,k", [(1, 1), (10, 3), (1000, 1), (5000, 4999)])
def test_small_tensors_select_exactly(n, k):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    idx, vals = topk.select(x, k, np.random.default_rng(0))
    _check_selection(x, idx, vals, k, 0.0)


def test_keep_count_rounds_and_keeps_at_least_one():
    assert topk.keep_count(0.1, 1000) == 100
    assert topk.keep_count(0.001, 10) == 1
    assert topk.keep_count(None, 10) == 10
    assert topk.keep_count(0.5, 0) == 0
    assert topk.keep_count(1.0, 7) == 7


def test_torch_selection_is_exact_and_sorted():
    x = torch.randn(5000)
    idx, vals = topk.select_torch(x, 500)
    _check_selection(x.numpy(), idx.numpy(), vals.numpy(), 500, 0.0)


def test_exact_selection_keeps_exactly_k_in_order_with_ties_and_nan():
    from worker.codecs import topk

    ties = np.array([1, 3, 3, 3, 2, 3, 0, 3], dtype=np.float32)  # five values tie at the 3rd largest
    idx, vals = topk._exact(ties, 3)
    assert (idx.tolist(), vals.tolist()) == ([1, 2, 3], [3, 3, 3])
    idx, vals = topk._exact(-ties, 6)
    assert (idx.tolist(), vals.tolist()) == ([1, 2, 3, 4, 5, 7], [-3, -3, -3, -2, -3, -3])
    with_nan = np.array([0.5, np.nan, 2.0, -3.0], dtype=np.float32)
    idx, vals = topk._exact(with_nan, 2)
    assert idx.tolist() == [1, 3] and np.isnan(vals[0]) and vals[1] == -3.0  # NaN ranks largest, as in argpartition


@pytest.mark.parametrize("zeros", [0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("ratio", [0.05, 0.5])
def test_exact_selection_of_relu_like_values_matches_a_stable_sort(zeros, ratio):
    # ReLU outputs: most values one repeated zero (left out of the partition, which they slow down)
    rng = np.random.default_rng(int(zeros * 1000))
    x = np.where(rng.random(20_000) < zeros, 0.0, np.round(rng.standard_normal(20_000) * 4) / 4).astype(np.float32)
    k = topk.keep_count(ratio, x.size)
    expected = np.sort(np.argsort(-np.abs(x), kind="stable")[:k])  # the k largest, ties to the first
    idx, vals = topk._exact(x, k)
    assert idx.tolist() == expected.tolist() and np.array_equal(vals, x[expected])


def test_randomized_topk_probabilities_sum_to_k_and_follow_magnitude():
    x = torch.tensor([10.0, -5.0, 1.0, 1.0, 0.5, 0.0, -0.5, 2.0])
    p = topk.inclusion_probabilities(x.abs(), 3)
    assert float(p.sum()) == pytest.approx(3.0)
    assert float(p[0]) == 1.0 and float(p.max()) <= 1.0 and float(p[5]) == 0.0
    assert float(p[1]) > float(p[7]) > float(p[2]) == pytest.approx(float(p[3]))


def test_randomized_topk_keeps_exactly_k_and_is_unbiased():
    torch.manual_seed(0)
    x = torch.randn(2000) * torch.linspace(0.1, 3.0, 2000)
    rng = np.random.default_rng(0)
    total = torch.zeros_like(x, dtype=torch.float64)
    draws = 4000
    for _ in range(draws):
        idx, vals = topk.select_random(x, 100, float(rng.random()))
        assert idx.numel() == 100 and bool((idx[1:] > idx[:-1]).all())
        total[idx] += vals.double()
    mean = total / draws
    # unbiased: the mean of the sparse draws converges on x (exact top-k keeps ~5% of the mass at zero)
    assert float((mean - x.double()).norm() / x.norm()) < 0.2
    assert abs(float(mean.sum() - x.double().sum())) < 0.02 * float(x.abs().sum())
