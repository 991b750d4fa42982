import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimpipe.spec import CompressionSpec
from worker.codecs import CodecError, decode, make_codec, quantize, wire


def _step_bound(x: torch.Tensor, y: torch.Tensor, step: float) -> bool:
    """|x - y| <= step/2, up to one fp32 rounding of the decoded value."""
    slack = 2.0 * torch.finfo(torch.float32).eps * x.abs().max().item()
    return bool(((x - y).abs() <= step / 2 * (1 + 1e-9) + slack).all())


@pytest.mark.parametrize("bits", range(1, 17))
def test_per_tensor_nearest_error_is_at_most_half_a_step(bits):
    x = torch.randn(4000) * 3
    payload = make_codec(CompressionSpec(bits=bits, scale="tensor")).encode(x)
    step = quantize.bf16_to_float(quantize.bf16_up(np.array([(x.max() - x.min()).item() / ((1 << bits) - 1)])))[0]
    assert step >= (x.max() - x.min()).item() / ((1 << bits) - 1)
    assert _step_bound(x, decode(payload), float(step))


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("scale,block,groups", [("tensor", 64, 1), ("block", 64, 63), ("block", 100, 40), ("channel", 64, 125)])
def test_payload_is_exactly_packed_bits_plus_scales_plus_header(bits, scale, block, groups):
    x = torch.randn(32, 125)  # 4000 values
    payload = make_codec(CompressionSpec(bits=bits, scale=scale, block=block)).encode(x)
    assert len(payload) == math.ceil(4000 * bits / 8) + 6 * groups + wire.header_bytes(2)


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("scale", ["tensor", "channel", "block"])
def test_block_and_channel_errors_stay_within_their_own_step(backend, scale):
    from tests.worker.codecs.conftest import transformer_like

    x = transformer_like(16, 96)
    spec = CompressionSpec(bits=4, scale=scale, block=64)
    y = decode(make_codec(spec, backend=backend).encode(x))
    err = (x - y).abs()
    if scale == "channel":  # each column is a channel: error bounded by its own range / 15 / 2
        bound = (x.amax(0) - x.amin(0)) / 15 / 2 * 1.01 + 1e-6
        assert bool((err <= bound).all())
    if scale == "block":
        blocks = x.reshape(-1, 64)
        bound = ((blocks.amax(1) - blocks.amin(1)) / 15 / 2 * 1.01 + 1e-6)[:, None]
        assert bool((err.reshape(-1, 64) <= bound).all())
    rel = float((x - y).norm() / x.norm())
    assert rel < {"tensor": 1.0, "channel": 0.15, "block": 0.25}[scale]


def test_channel_scales_beat_tensor_scales_on_outlier_channels():
    from tests.worker.codecs.conftest import transformer_like

    x = transformer_like(64, 128)
    errors = {}
    for scale in ("tensor", "channel"):
        y = decode(make_codec(CompressionSpec(bits=4, scale=scale)).encode(x))
        errors[scale] = float(((x - y)[:, 1:32]).norm())  # the ordinary channels
    assert errors["channel"] < errors["tensor"] / 5


def test_nchw_scales_per_dim_one():
    assert quantize.channel_layout((8, 16, 5, 5)) == (25, 16)
    assert quantize.channel_layout((8, 10, 768)) == (1, 768)
    assert quantize.channel_layout((7,)) == (1, 1)


def test_stochastic_rounding_is_unbiased():
    x = torch.full((20000,), 0.3)
    x[0], x[1] = 0.0, 1.0  # per-tensor grid 0, 1/3, 2/3, 1 with 2 bits: 0.3 sits between 0 and 1/3
    y = decode(make_codec(CompressionSpec(bits=2, scale="tensor", rounding="stochastic")).encode(x))
    step = float(quantize.bf16_to_float(quantize.bf16_up(np.array([1 / 3])))[0])  # 0.333984375
    assert set(np.unique(y[2:].numpy()).tolist()) == {0.0, step}
    assert abs(y[2:].mean().item() - 0.3) < 0.005
    nearest = decode(make_codec(CompressionSpec(bits=2, scale="tensor")).encode(x))
    assert torch.equal(nearest[2:], torch.full((19998,), step))


@pytest.mark.parametrize("value", [0.0, 1.0, -7.25, 1e-30, 3e38, -3e38])
def test_constant_tensors_decode_exactly(value):
    x = torch.full((300,), value)
    for scale in ("tensor", "block", "channel"):
        assert torch.equal(decode(make_codec(CompressionSpec(bits=3, scale=scale)).encode(x)), x)


def test_huge_and_tiny_values_keep_relative_precision():
    x = torch.cat([torch.randn(128) * 1e30, torch.randn(128) * 1e-30])
    y = decode(make_codec(CompressionSpec(bits=8, block=64)).encode(x))
    x, y = x.double(), y.double()
    assert float((x[:128] - y[:128]).norm() / x[:128].norm()) < 0.01
    assert float((x[128:] - y[128:]).norm() / x[128:].norm()) < 0.01


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("scale", ["tensor", "channel", "block"])
def test_non_finite_values_are_refused(bad, scale):
    x = torch.randn(4, 64)
    x[2, 5] = bad
    with pytest.raises(CodecError, match="NaN or inf"):
        make_codec(CompressionSpec(bits=4, scale=scale)).encode(x)


def test_range_beyond_float32_is_refused():
    x = torch.tensor([-3.4e38, 3.4e38])
    with pytest.raises(CodecError, match="range"):
        make_codec(CompressionSpec(bits=1, scale="tensor")).encode(x)


def test_bf16_up_is_the_smallest_bf16_not_below():
    values = np.array([0.0, 1.0, 1.0 + 1e-9, 3.0, 1e-45, 1e-40, 123.456, 2.0**-133])
    up = quantize.bf16_to_float(quantize.bf16_up(values)).astype(np.float64)
    assert np.all(up >= values)
    below = quantize.bf16_to_float(quantize.bf16_up(values) - (up > 0)).astype(np.float64)
    assert np.all((below < values) | (up == 0))


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(1, 16), n=st.integers(0, 700), block=st.sampled_from([2, 3, 64, 128, 100]),
       scale=st.sampled_from(["tensor", "channel", "block"]), seed=st.integers(0, 2**16))
def test_round_trip_and_size_property(bits, n, block, scale, seed):
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 10
    spec = CompressionSpec(bits=bits, scale=scale, block=block)
    payload = make_codec(spec).encode(x)
    groups = max(1, -(-n // block)) if scale == "block" else 1
    assert len(payload) == math.ceil(n * bits / 8) + 6 * groups + wire.header_bytes(1)
    y = decode(payload)
    assert y.shape == x.shape
    if n:
        lo = x.min().item() if scale != "block" else None
        if lo is not None:
            step = ((x.max() - x.min()).item() / ((1 << bits) - 1)) * (1 + 2**-7)
            assert _step_bound(x, y, step)
    assert payload == make_codec(spec, backend="torch").encode(x)


# --------------------------------------------------------------------------- step_std: a fixed step in standard deviations


def _std_spec(**kw) -> CompressionSpec:
    return CompressionSpec(**{"bits": 8, "step_std": 0.5, "entropy": "ans", "scale": "tensor", **kw})


@pytest.mark.parametrize("scale,topk", [("tensor", None), ("channel", None), ("block", None), ("channel", 0.1), ("block", 0.1)])
def test_step_std_sends_the_same_bytes_from_numba_and_torch(scale, topk):
    from tests.worker.codecs.conftest import transformer_like

    x = transformer_like(64, 96)
    spec = _std_spec(scale=scale, topk=topk, block=128)
    assert make_codec(spec, backend="numba").encode(x) == make_codec(spec, backend="torch").encode(x)


@pytest.mark.parametrize("scale", ["tensor", "channel", "block"])
def test_step_std_levels_sit_step_apart_around_each_groups_mean(scale):
    """Decoded values are mean + j * step: within half a step of the input where no clamp applies."""
    torch.manual_seed(0)
    x = torch.randn(256, 64) * torch.linspace(0.5, 4, 64) + torch.linspace(-3, 3, 64)
    payload = make_codec(_std_spec(scale=scale, block=256)).encode(x)
    header, sections = wire.unpack(payload)
    lo, step = quantize.parse_scales(sections["scales"], {"tensor": 1, "channel": 64, "block": 64}[scale])
    groups = {"tensor": x.reshape(1, -1), "channel": x.T, "block": x.reshape(64, 256)}[scale].double()
    std = groups.std(dim=1, unbiased=False).numpy()
    assert np.all(step >= 0.5 * std) and np.all(step <= 0.5 * std * (1 + 2**-7))  # bf16, rounded up
    # the mean sits on level 128, up to the fp32 rounding of lo
    assert np.all(np.abs(lo + 128 * step - groups.mean(dim=1).numpy()) <= 1e-6 * (1 + np.abs(lo)))
    y = decode(payload).double()
    per_value_step = {"tensor": step[0], "channel": torch.from_numpy(step)[None, :], "block": None}[scale]
    if per_value_step is None:
        per_value_step = torch.from_numpy(step).repeat_interleave(256).reshape(256, 64)
    assert bool(((y - x.double()).abs() <= per_value_step / 2 * (1 + 1e-6) + 1e-5).all())


def test_step_std_clamps_what_lies_past_the_levels_and_bytes_follow_the_entropy():
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    coarse, fine = (make_codec(_std_spec(step_std=s)).encode(x) for s in (2.0, 0.25))
    # a Gaussian at a step of 2 std costs about 1.1 bits per value, at 0.25 std about 4 (h(X) - log2 step)
    assert 0.9 < len(coarse) * 8 / x.numel() < 1.3
    assert 3.8 < len(fine) * 8 / x.numel() < 4.3
    assert float((decode(fine) - x).norm() / x.norm()) == pytest.approx(0.25 / math.sqrt(12), rel=0.05)
    x[0] = 50.0  # past the top level, mean + 127 steps of 0.25 std (about 32): clamps there
    payload = make_codec(_std_spec(step_std=0.25)).encode(x)
    _, sections = wire.unpack(payload)
    lo, step = quantize.parse_scales(sections["scales"], 1)
    assert float(decode(payload)[0]) == pytest.approx(lo[0] + 255 * step[0], rel=1e-6)
    assert 30 < lo[0] + 255 * step[0] < 34


def test_step_std_keeps_constant_groups_exact_and_refuses_non_finite():
    x = torch.full((4, 64), 2.5)
    x[1] = -7.0
    assert torch.equal(decode(make_codec(_std_spec(scale="block", block=64)).encode(x)), x)
    for scale in ("tensor", "channel", "block"):
        assert decode(make_codec(_std_spec(scale=scale)).encode(torch.zeros(0, 8))).shape == (0, 8)
    with pytest.raises(CodecError, match="NaN or inf"):
        make_codec(_std_spec()).encode(torch.tensor([1.0, float("nan")]))
    huge = torch.tensor([3e34, -3e34, 1e34, 0.0])  # 65536 steps of 1 std span ~1e39
    with pytest.raises(CodecError, match="65536 levels of 1 standard deviations reach past float32's range"):
        make_codec(_std_spec(bits=16, step_std=1.0)).encode(huge)
    assert float((decode(make_codec(_std_spec(bits=8, step_std=1.0)).encode(huge)) - huge).abs().max()) < 2e34


def test_step_std_needs_bits_and_entropy():
    with pytest.raises(ValueError, match="step_std .* set bits .* entropy: ans"):
        CompressionSpec(bits=8, step_std=1.0)
    with pytest.raises(ValueError, match="step_std"):
        CompressionSpec(step_std=1.0, entropy=None)


# --------------------------------------------------------------------------- rate: the step that meets a bit budget


def _rate_spec(**kw) -> CompressionSpec:
    return CompressionSpec(**{"bits": 8, "rate": 2.0, "entropy": "ans", "scale": "tensor", **kw})


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("rate", [0.5, 1.0, 2.0, 3.0])
def test_rate_meets_the_bit_budget_on_light_and_heavy_tails(rate, rounding):
    """About `rate` bits per value on the wire (levels at their entropy, plus a header and rANS's table),
    whatever the distribution: a fixed step_std spends fewer bits on heavier tails. Stochastic rounding
    spreads values over more levels (26 % more bits at 1 bit per value, were the step nearest's): the
    search counts its expected levels."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    for x in (torch.randn(64, 64, 96, generator=g), torch.distributions.StudentT(5.0).sample((64, 64, 96))):
        payload = make_codec(_rate_spec(rate=rate, rounding=rounding)).encode(x)
        assert len(payload) * 8 / x.numel() == pytest.approx(rate, rel=0.04, abs=0.02)


def test_rate_never_steps_so_fine_that_the_levels_clamp():
    """Student-t values (2.5 degrees of freedom: the largest of these lies ~100 standard deviations out) at
    2 bits per value would need steps whose 256 levels miss the tails: 8 bits spend less and clamp nothing
    (every value within half a step); 12 bits reach the rate. A tensor with one live row in 64 (a
    classifier token's gradient) spends what its one row needs, not a bit for every zero."""
    torch.manual_seed(0)
    x = torch.distributions.StudentT(2.5).sample((64, 64, 96))
    capped, wide = (make_codec(_rate_spec(rate=2.0, bits=b)).encode(x) for b in (8, 12))
    assert 0.5 < len(capped) * 8 / x.numel() < 1.8
    _, sections = wire.unpack(capped)
    _, step = quantize.parse_scales(sections["scales"], 1)
    assert float((decode(capped) - x).abs().max()) <= step[0] / 2 * (1 + 1e-5)  # no value clamped
    assert len(wide) * 8 / x.numel() == pytest.approx(2.0, rel=0.04)
    sparse = torch.zeros(8, 64, 384)
    sparse[:, 0] = torch.randn(8, 384)
    payload = make_codec(_rate_spec(rate=1.0)).encode(sparse)
    assert len(payload) * 8 / sparse.numel() < 0.5
    assert float((decode(payload) - sparse).norm() / sparse.norm()) < 0.05


def test_rate_picks_the_step_of_the_textbook_uniform_quantizer():
    """Gaussian values at 3 bits: step 4.13 * 2^-3 = 0.52 std (h(X) - log2 step), relative error 0.15."""
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(1))
    payload = make_codec(_rate_spec(rate=3.0)).encode(x)
    _, sections = wire.unpack(payload)
    _, step = quantize.parse_scales(sections["scales"], 1)
    assert step[0] / float(x.std()) == pytest.approx(math.sqrt(2 * math.pi * math.e) / 8, rel=0.03)
    assert float((decode(payload) - x).norm() / x.norm()) == pytest.approx(step[0] / float(x.std()) / math.sqrt(12), rel=0.03)


@pytest.mark.parametrize("scale,topk", [("tensor", None), ("channel", None), ("block", 0.1)])
def test_rate_sends_the_same_bytes_from_numba_and_torch_and_on_every_call(scale, topk):
    from tests.worker.codecs.conftest import transformer_like

    x = transformer_like(128, 192)  # over RATE_SAMPLE values: the search looks at a fixed sample
    assert x.numel() > quantize.RATE_SAMPLE
    spec = _rate_spec(scale=scale, topk=topk, block=128)
    first = make_codec(spec, backend="numba").encode(x)
    assert first == make_codec(spec, backend="torch").encode(x) == make_codec(spec, backend="numba").encode(x)


def test_rate_keeps_constant_tensors_exact_and_names_its_conflicts():
    x = torch.full((4, 64), -1.5)
    assert torch.equal(decode(make_codec(_rate_spec()).encode(x)), x)
    assert decode(make_codec(_rate_spec()).encode(torch.zeros(0, 8))).shape == (0, 8)
    with pytest.raises(ValueError, match="rate picks the step itself; set step_std: null or rate: null"):
        CompressionSpec(bits=8, rate=2.0, step_std=1.0, entropy="ans")
    with pytest.raises(ValueError, match="rate .* set bits .* entropy: ans"):
        CompressionSpec(bits=8, rate=2.0)
    with pytest.raises(ValueError, match="rate 4 needs more than bits: 4 levels"):
        CompressionSpec(bits=4, rate=4.0, entropy="ans")


def test_tensor_moments_agree_with_numpy_and_expose_non_finite_values():
    """The tensor-wide step's statistics in one compiled pass each (eight running sums, a fixed order): the
    figures NumPy's float64 passes give, to rounding; a NaN or inf shows in the sum."""
    from worker.codecs import fused

    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 1001, 1 << 16):
        x = (rng.standard_t(3, n) * 5 + 2).astype(np.float32)
        total, mean, var, peak = fused.moments(x)
        v = x.astype(np.float64)
        assert total == pytest.approx(v.sum(), rel=1e-12) and mean == pytest.approx(v.mean(), rel=1e-12)
        assert var == pytest.approx(np.square(v - v.mean()).mean(), rel=1e-12)
        assert peak == pytest.approx(np.abs(v - v.mean()).max(), rel=1e-12)
    assert fused.moments(np.zeros(0, np.float32)) == (0.0, 0.0, 0.0, 0.0)
    for bad in (np.nan, np.inf, -np.inf):
        x = np.ones(100, np.float32)
        x[37] = bad
        assert not np.isfinite(fused.moments(x)[0])
