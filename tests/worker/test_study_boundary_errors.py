"""studies/compression/boundary_errors.py: the boundary tensors it keeps are the pipeline's, its figures are the codecs'."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("boundary_errors", ROOT / "studies" / "compression" / "boundary_errors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cnn_tensors(study):
    return study.boundary_tensors("cnn", ROOT / "var" / "unused", steps=1)


def test_keeps_each_boundarys_activation_and_its_gradient_per_microbatch(cnn_tensors):
    # digits: batch 64 in 4 micro-batches of 16, 3 stages -> boundaries 0 and 1
    assert sorted({j for j, _ in cnn_tensors["forward"]}) == [0, 1]
    assert len(cnn_tensors["forward"]) == len(cnn_tensors["backward"]) == 2 * 4
    for (j, x), (k, g) in zip(cnn_tensors["forward"], cnn_tensors["backward"], strict=True):
        assert j == k and x.shape == g.shape and x.shape[0] == 16
        assert float(g.abs().sum()) > 0  # the stage-by-stage backward reached every boundary


def test_stage_by_stage_gradients_equal_the_whole_models(study, cnn_tensors):
    """The gradient kept at boundary 0 is d(loss)/d(activation) of the unsplit model on that micro-batch."""
    from slimpipe.spec import load_spec_text, parse_spec
    from worker.pipeline.microbatch import scatter
    from worker.pipeline.runner import _full
    from worker.train import Experiment

    exp = Experiment(parse_spec(load_spec_text(study.TASKS["cnn"].read_text())))
    x, y, _ = exp.get_batch(0)
    xm, ym = scatter(x, 4)[0], torch.tensor_split(y, 4)[0]
    act = exp.stages[0](xm)
    out = act
    for stage in exp.stages[1:]:
        out = stage(out)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(_full(out), ym), [act])
    first = [j for j, _ in cnn_tensors["forward"]].index(0)  # micro-batch 0's boundary 0
    kept_x, kept_g = cnn_tensors["forward"][first][1], cnn_tensors["backward"][first][1]
    torch.testing.assert_close(kept_x, act.detach())
    torch.testing.assert_close(kept_g, grad, rtol=1e-5, atol=1e-7)


def test_measure_reports_the_codecs_ratio_and_error(study, cnn_tensors):
    tensors = cnn_tensors["backward"]
    ratio, per_boundary = study.measure({"bits": 8}, tensors)
    assert 3.0 < ratio < 4.0  # 8-bit values plus block scales
    assert all(0 < err < 0.02 and cos > 0.999 for err, cos in per_boundary.values())
    ratio, per_boundary = study.measure({"topk": 0.1}, tensors)
    assert 7.0 < ratio < 10.0  # 10 % of the values with their indices
    assert all(0.05 < err < 1.0 for err, _ in per_boundary.values())


def test_reference_reaches_the_rate_asked_with_the_textbook_error_of_uniform_steps(study):
    """Gaussian values: entropy-coded uniform quantization errs sqrt(pi*e/6) * 2^-R relative (high-rate
    theory: 0.298 at 2 bits, 0.075 at 4); the bisection lands on the bits per value asked."""
    g = torch.Generator().manual_seed(0)
    tensors = [(0, torch.randn(64, 512, generator=g)), (1, torch.randn(64, 512, generator=g))]
    for rate, low, high in [(2.0, 0.28, 0.32), (4.0, 0.068, 0.080)]:
        bits, errors = study.reference(tensors, rate)
        assert bits == pytest.approx(rate, abs=0.01)
        assert sorted(errors) == [0, 1]
        assert all(low < e < high for e in errors.values())


def test_a_min_max_codec_errs_more_than_the_reference_at_its_own_bits(study):
    """Min-max levels spend their range on the extremes: a little on Gaussian values, a lot on heavy tails."""
    torch.manual_seed(1)
    gaussian = torch.randn(16, 64, 384)
    heavy = torch.distributions.StudentT(3.0).sample((16, 64, 384))
    codec = {"bits": 3, "scale": "channel", "entropy": "ans"}
    for values, margin in [(gaussian, 0.97), (heavy, 0.5)]:
        ratio, per_boundary = study.measure(codec, [(0, values)])
        _, errors = study.reference([(0, values)], 32.0 / ratio)
        assert errors[0] < margin * per_boundary[0][0]


def test_weights_screen_dense_is_exact_and_compression_chains_into_earlier_stages(study):
    """The weights screen compares each stage's parameter gradient with and without the codecs: none
    gives cosine 1 and ratio 1; the head's gradient never crosses a boundary, so gradient codecs leave
    it exact while the stages upstream of a coarse one see its error; stage 0 gets its gradient."""
    configs = {
        "dense": {},
        "8-bit": {"forward": {"bits": 8}, "backward": {"bits": 8}},
        "coarse gradients": {"backward": {"topk": 0.01}},
    }
    results = study.weight_gradients("cnn", ROOT / "var" / "unused", 1, configs)
    dense, fine, coarse = results["dense"], results["8-bit"], results["coarse gradients"]
    assert dense["forward"] == dense["backward"] == dense["ratio"] == 1.0
    assert dense["cosines"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
    assert 3.0 < fine["forward"] < 4.0 and 3.0 < fine["backward"] < 4.0
    assert all(c > 0.99 for c in fine["cosines"])
    assert coarse["forward"] == 1.0 and coarse["backward"] > 20.0
    assert 1.9 < coarse["ratio"] < 2.0  # dense activations, a twentieth of the gradients' bytes
    assert coarse["cosines"][2] == pytest.approx(1.0, abs=1e-6)
    assert coarse["cosines"][0] < 0.9 and coarse["cosines"][1] < 0.9
