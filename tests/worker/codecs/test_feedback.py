"""Stateful codecs: error feedback on the sender, per-sample delta references on both ends."""

import io

import pytest
import torch

from slimpipe.spec import CompressionSpec
from worker.codecs import CodecError, decode, make_codec
from worker.codecs.feedback import SampleCache


def test_error_feedback_carries_what_was_lost_into_the_next_step():
    spec = CompressionSpec(topk=0.1, bits=2, feedback="ef")
    sender = make_codec(spec)
    x = torch.randn(400)
    sent_total = torch.zeros(400)
    for _ in range(30):
        sent_total += decode(sender.encode(x))  # ef payloads decode without state
    # sum of what arrived = sum of inputs - final residual, so the average converges on x
    assert torch.allclose(sent_total + sender.error_feedback.residual, 30 * x, atol=1e-3)
    one_shot = float((decode(make_codec(spec).encode(x)) - x).norm() / x.norm())
    assert float((sent_total / 30 - x).norm() / x.norm()) < one_shot / 4


def test_error_feedback_restarts_on_a_new_shape():
    sender = make_codec(CompressionSpec(bits=2, feedback="ef"))
    sender.encode(torch.randn(8, 4))
    assert decode(sender.encode(torch.randn(3, 4))).shape == (3, 4)


def test_delta_receiver_tracks_the_sender_and_needs_its_state():
    spec = CompressionSpec(bits=4, feedback="delta", warmup_steps=1)
    sender, receiver = make_codec(spec), make_codec(spec)
    keys = torch.tensor([5, 9, 11])
    base = torch.randn(3, 50)
    sender.train_step = 0
    first = receiver.decode(sender.encode(base, keys=keys))
    assert torch.equal(first, base)  # warmup: dense, sets the references
    sender.train_step = 1
    drifted = base + 0.01 * torch.randn(3, 50)
    payload = sender.encode(drifted, keys=keys)
    with pytest.raises(CodecError, match="receiving Codec"):
        decode(payload)
    got = receiver.decode(payload)
    assert float((got - drifted).abs().max()) < 0.003  # 4-bit of a 0.01-sized delta; x itself would err ~0.1
    for key in keys.tolist():
        assert torch.equal(sender.references.refs[key], receiver.references.refs[key])


def test_delta_on_permuted_and_new_keys():
    spec = CompressionSpec(bits=8, feedback="delta")
    sender, receiver = make_codec(spec), make_codec(spec)
    x = torch.randn(4, 10)
    receiver.decode(sender.encode(x, keys=torch.tensor([0, 1, 2, 3])))
    y = torch.stack([x[2], x[0], torch.randn(10)])
    got = receiver.decode(sender.encode(y, keys=torch.tensor([2, 0, 7])))
    assert float((got - y).abs().max()) < 0.05


@pytest.mark.parametrize("keys,match", [(None, "needs keys"), (torch.tensor([1, 2]), "one id per row"),
                                        (torch.tensor([1, 1, 2]), "unique"), (torch.tensor([[1, 2, 3]]), "1-D")])
def test_delta_keys_are_validated(keys, match):
    with pytest.raises(CodecError, match=match):
        make_codec(CompressionSpec(feedback="delta")).encode(torch.randn(3, 4), keys=keys)


@pytest.mark.parametrize("feedback", ["ef", "delta"])
def test_state_dict_restores_the_exact_stream(feedback):
    spec = CompressionSpec(topk=0.3, bits=3, rounding="stochastic", feedback=feedback, warmup_steps=1)
    keys = torch.arange(6)
    inputs = [torch.randn(6, 20) for _ in range(4)]
    codec = make_codec(spec)
    for x in inputs[:2]:
        codec.encode(x, keys=keys)
    buffer = io.BytesIO()
    torch.save(codec.state_dict(), buffer)
    expected = [codec.encode(x, keys=keys) for x in inputs[2:]]
    restored = make_codec(spec)
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=False))
    assert restored.step == 2
    assert [restored.encode(x, keys=keys) for x in inputs[2:]] == expected


def test_reset_forgets_state():
    codec = make_codec(CompressionSpec(bits=2, feedback="ef"))
    x = torch.randn(100)
    first = codec.encode(x)
    assert codec.encode(x) != first  # the residual changed what was sent
    codec.reset()
    assert codec.step == 0 and codec.error_feedback.residual is None
    assert codec.encode(x) == first


def test_delta_payload_stripped_of_its_keys_is_refused():
    from worker.codecs import wire

    spec = CompressionSpec(bits=8, feedback="delta")
    sender, receiver = make_codec(spec), make_codec(spec)
    header, sections = wire.unpack(sender.encode(torch.randn(3, 10), keys=torch.tensor([0, 1, 2])))
    assert header.feedback in ("delta", "delta_base") and sections["keys"].nbytes == 3 * 8
    forged = wire.pack(header, {**sections, "keys": b""})
    with pytest.raises(CodecError, match="no sample keys"):
        receiver.decode(forged)


def test_per_sample_error_feedback_carries_a_residual_only_to_its_own_sample():
    spec = CompressionSpec(topk=0.2, bits=2, feedback="ef")
    codec, fresh = make_codec(spec), make_codec(spec)
    x = torch.randn(2, 40)
    first = codec.encode(x, keys=torch.tensor([0, 1]))
    assert codec.error_feedback.residual is None and len(codec.references) == 2
    # other samples of the same shape get nothing of samples 0 and 1's residual (the old tensor-level ef did)
    assert codec.encode(x, keys=torch.tensor([2, 3])) == fresh.encode(x, keys=torch.tensor([2, 3])) == first
    residual = codec.references.lookup(torch.tensor([0, 1]), x)
    assert torch.allclose(residual, x - decode(first), atol=1e-6)
    again = decode(codec.encode(x, keys=torch.tensor([1, 0])))
    assert torch.equal(again, decode(make_codec(spec).encode(x + residual.flip(0))))


def test_sample_cache_evicts_the_least_recently_stored_and_counts_its_bytes():
    cache = SampleCache(capacity=3)
    rows = torch.arange(5 * 4, dtype=torch.float32).reshape(5, 4)
    cache.store(torch.tensor([0, 1, 2]), rows[:3])
    cache.store(torch.tensor([0]), rows[:1] + 100)  # refreshes sample 0
    cache.store(torch.tensor([3, 4]), rows[3:])
    assert list(cache.refs) == [0, 3, 4] and cache.evicted == 2
    assert cache.nbytes == 3 * 4 * 4
    got = cache.lookup(torch.tensor([1, 0, 4]), rows[:3])
    assert torch.equal(got[0], torch.zeros(4)) and torch.equal(got[1], rows[0] + 100) and torch.equal(got[2], rows[4])


def test_delta_ends_evict_alike_and_an_evicted_sample_is_sent_whole():
    spec = CompressionSpec(bits=8, feedback="delta", sample_cache=2)
    sender, receiver = make_codec(spec), make_codec(spec)
    values = {k: torch.randn(1, 30) for k in range(4)}
    for key in (0, 1, 2, 0, 3, 1):  # 2 evicts 0, 0 evicts 1, 3 evicts 2, 1 evicts 0
        got = receiver.decode(sender.encode(values[key], keys=torch.tensor([key])))
        assert float((got - values[key]).abs().max()) < 0.05
        assert list(sender.references.refs) == list(receiver.references.refs)
    assert list(sender.references.refs) == [3, 1] and sender.references.evicted == 4
    assert sender.cache_bytes == receiver.cache_bytes == 2 * 30 * 4


def test_sample_cache_survives_a_checkpoint_with_its_eviction_order():
    spec = CompressionSpec(bits=4, feedback="delta", sample_cache=3)
    codec = make_codec(spec)
    for key in (5, 6, 7, 5):
        codec.encode(torch.randn(1, 8), keys=torch.tensor([key]))
    buffer = io.BytesIO()
    torch.save(codec.state_dict(), buffer)
    restored = make_codec(spec)
    restored.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=False))
    assert list(restored.references.refs) == [6, 7, 5] and restored.cache_bytes == codec.cache_bytes
    x = torch.randn(1, 8)
    assert restored.encode(x, keys=torch.tensor([9])) == codec.encode(x, keys=torch.tensor([9]))
    assert list(restored.references.refs) == list(codec.references.refs) == [7, 5, 9]
