"""Warm-up in training steps: dense, or a ramp from dense to the target compression."""

import pytest

from slimpipe.spec import CompressionSpec
from worker.codecs.warmup import spec_at


def test_dense_warmup_is_fp32_for_n_steps_then_the_target():
    spec = CompressionSpec(topk=0.1, bits=4, warmup_steps=3)
    assert [spec_at(spec, s) for s in range(3)] == [None, None, None]
    assert spec_at(spec, 3) is spec and spec_at(spec, 100) is spec


def test_evaluation_never_warms_up():
    spec = CompressionSpec(topk=0.1, warmup_steps=1000, warmup="ramp")
    assert spec_at(spec, None) is spec


def test_ramp_lowers_keep_ratio_geometrically_and_bits_linearly():
    spec = CompressionSpec(topk=0.01, bits=2, entropy="ans", warmup_steps=10, warmup="ramp")
    start, middle, late = spec_at(spec, 0), spec_at(spec, 5), spec_at(spec, 9)
    assert (start.topk, start.bits, start.entropy) == (1.0, 16, None)
    assert middle.topk == pytest.approx(0.1) and middle.bits == 9 and middle.entropy is None
    assert late.topk == pytest.approx(0.01**0.9) and late.bits == 3
    assert spec_at(spec, 10) is spec
    keep = [spec_at(spec, s).topk for s in range(10)]
    assert keep == sorted(keep, reverse=True)


def test_ramp_of_a_quantize_only_spec_keeps_topk_off():
    ramped = spec_at(CompressionSpec(bits=4, warmup_steps=4, warmup="ramp"), 2)
    assert ramped.topk is None and ramped.bits == 10
