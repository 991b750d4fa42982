"""Boundaries: bytes on the wire are len(payload), compression shrinks them, gradients take the backward codec."""

import pytest
import torch

from slimpipe.spec import CompressionConfig, CompressionSpec
from worker.pipeline.boundary import Boundary, BoundaryFunction, Channel, RawCodec, error_sums, make_boundaries, send


def spy_payloads(channel):
    """Record every payload the channel's sender produces."""
    payloads = []
    encode = channel.sender.encode

    def recording(x, keys=None):
        payload = encode(x, keys)
        payloads.append(payload)
        return payload

    channel.sender.encode = recording
    return payloads


def test_dense_channel_passes_the_tensor_and_counts_raw_bytes():
    channel = Channel(CompressionSpec())
    x = torch.randn(4, 8)
    assert channel.send(x, microbatch=0) is x
    assert (channel.stats.wire_bytes, channel.stats.dense_bytes, channel.stats.rel_error) == (128, 128, 0.0)
    assert channel.stats.transfers == [(0, 128)]


def test_recorded_bytes_equal_len_of_each_payload_both_directions():
    b = Boundary(0, CompressionSpec(topk=0.25), CompressionSpec(bits=8))
    fwd, bwd = spy_payloads(b.forward), spy_payloads(b.backward)
    for mb in range(3):
        x = torch.randn(16, 32, requires_grad=True)
        y = BoundaryFunction.apply(x, b, mb, None)
        y.backward(torch.randn(16, 32))
    assert b.forward.stats.wire_bytes == sum(len(p) for p in fwd) > 0
    assert b.backward.stats.wire_bytes == sum(len(p) for p in bwd) > 0
    assert [n for _, n in b.forward.stats.transfers] == [len(p) for p in fwd]
    assert b.forward.stats.dense_bytes == b.backward.stats.dense_bytes == 3 * 16 * 32 * 4


def test_topk_point_one_cuts_forward_bytes_to_about_a_tenth():
    dense, sparse = Channel(CompressionSpec()), Channel(CompressionSpec(topk=0.1))
    x = torch.randn(64, 1024)
    dense.send(x, 0)
    out = sparse.send(x, 0)
    ratio = sparse.stats.wire_bytes / dense.stats.wire_bytes
    assert 0.1 <= ratio < 0.15  # 10 % of the fp32 values plus a compact index set and a header
    assert int((out != 0).sum()) == pytest.approx(0.1 * x.numel(), rel=0.05)
    kept = out != 0
    assert torch.equal(out[kept], x[kept])
    expected = float((out - x).norm() / x.norm())
    assert sparse.stats.rel_error == pytest.approx(expected, rel=1e-5)


def test_the_gradient_goes_through_the_backward_codec_only():
    b = Boundary(0, CompressionSpec(), CompressionSpec(topk=0.1))
    x = torch.randn(8, 100, requires_grad=True)
    y = BoundaryFunction.apply(x, b, 0, None)
    assert torch.equal(y, x)  # forward dense
    grad = torch.randn(8, 100)
    y.backward(grad)
    assert int((x.grad != 0).sum()) == pytest.approx(80, abs=4)
    assert b.backward.stats.rel_error > 0.5
    assert b.forward.stats.rel_error == 0.0


def test_side_tensors_cross_raw_and_floats_keep_their_gradient():
    b = Boundary(0, CompressionSpec(), CompressionSpec())
    hidden = torch.randn(2, 5, 4, requires_grad=True)
    mask = torch.ones(2, 5, dtype=torch.bool)
    out_hidden, out_mask = send((hidden, mask), b, 0)
    assert out_mask is mask and out_hidden.requires_grad
    assert b.forward.stats.wire_bytes == 2 * 5 * 4 * 4 + 2 * 5


def test_per_boundary_overrides_apply_to_their_boundary_only():
    config = CompressionConfig.model_validate(
        {"default": {"forward": {"topk": 0.5}}, "boundaries": {1: {"forward": {"bits": 4}}}}
    )
    b0, b1, b2 = make_boundaries(config, 4)
    assert (b0.forward.spec.topk, b1.forward.spec.bits, b2.forward.spec.topk) == (0.5, 4, 0.5)
    assert b0.backward.dense and b1.backward.dense


def test_codec_state_round_trips_through_a_state_dict():
    spec = CompressionSpec(topk=0.1, feedback="ef")
    b = Boundary(0, spec, spec)
    for _ in range(3):
        b.forward.send(torch.randn(4, 50), 0)
    state = b.codec_state()
    assert set(state) == {"forward.sender", "forward.receiver", "backward.sender", "backward.receiver"}
    clone = Boundary(0, spec, spec)
    clone.load_codec_state(state)
    x = torch.randn(4, 50)
    assert torch.equal(clone.forward.send(x, 0), b.forward.send(x, 0))


def test_raw_codec_round_trips_and_refuses_truncated_payloads():
    codec = RawCodec()
    for x in (torch.randn(3, 4), torch.randn(2, 2).half(), torch.ones(5, dtype=torch.bool), torch.zeros(0, 3)):
        payload = codec.encode(x)
        assert torch.equal(RawCodec.decode(payload), x)
        assert len(payload) == 6 + 8 * x.dim() + x.numel() * x.element_size()
    with pytest.raises(ValueError, match="header promises"):
        RawCodec.decode(codec.encode(torch.randn(3, 4))[:-1])
    with pytest.raises(ValueError, match="bad magic"):
        RawCodec.decode(b"nope")


def test_evaluation_boundaries_code_deterministically_with_the_same_bits():

    spec = {"bits": 2, "rounding": "stochastic", "topk": 0.5, "topk_mode": "random", "warmup_steps": 9}
    config = CompressionConfig.model_validate({"default": {"forward": spec, "backward": spec}})
    train_b, eval_b = make_boundaries(config, 2)[0], make_boundaries(config, 2, evaluation=True)[0]
    assert train_b.forward.spec.rounding == "stochastic" and train_b.forward.spec.topk_mode == "random"
    for channel in (eval_b.forward, eval_b.backward):
        assert (channel.spec.rounding, channel.spec.topk_mode) == ("nearest", "exact")
        assert (channel.spec.bits, channel.spec.topk, channel.spec.warmup_steps) == (2, 0.5, 9)
    x = torch.randn(4, 64)
    assert torch.equal(eval_b.forward.send(x, 0), eval_b.forward.send(x, 0))


def test_error_sums_stay_on_the_device_until_read_and_equal_host_sums_bit_for_bit():
    """The in-process runner sends every transfer; its error sums are read once, not synced per send."""
    from worker.codecs import decode

    torch.manual_seed(0)
    channel = Channel(CompressionSpec(topk=0.3, bits=3), seed=4)
    twin = Channel(CompressionSpec(topk=0.3, bits=3), seed=4)  # same payloads, summed the old way
    err = ref_sq = out_sq = dot = 0.0
    for mb in range(3):
        x = torch.randn(8, 50)
        out = channel.send(x, mb)
        assert channel._error_sums is not None  # pending: nothing read back yet
        got = decode(twin.sender.encode(x)).float()
        assert torch.equal(got, out)
        sums = error_sums(x, got).tolist()
        assert sums == pytest.approx([float((got - x).pow(2).sum()), float(x.pow(2).sum()),
                                      float(got.pow(2).sum()), float((got * x).sum())], rel=1e-5)
        err += sums[0]
        ref_sq += sums[1]
        out_sq += sums[2]
        dot += sums[3]
        if mb == 1:  # a read between sends keeps the same order of additions
            assert channel.stats.err_sq == err
    stats = channel.stats
    assert (stats.err_sq, stats.ref_sq, stats.out_sq, stats.dot) == (err, ref_sq, out_sq, dot)
    assert channel._error_sums is None and len(stats.transfers) == 3 and stats.rel_error == (err / ref_sq) ** 0.5
    channel.reset_stats()
    assert channel.stats.err_sq == 0.0 and channel.stats.transfers == []
