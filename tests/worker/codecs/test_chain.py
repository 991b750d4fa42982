"""The whole chain through make_codec/decode: every field, edge tensors, dtypes, both backends."""

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from slimpipe.spec import CompressionSpec
from worker.codecs import CodecError, decode, indexset, make_codec, wire
from worker.codecs.chain import decode as decode_parts

SPECS = [
    CompressionSpec(),
    CompressionSpec(dtype="fp16"),
    CompressionSpec(dtype="bf16"),
    CompressionSpec(topk=0.1),
    CompressionSpec(topk=0.1, dtype="fp16"),
    CompressionSpec(bits=4),
    CompressionSpec(bits=4, rounding="stochastic"),
    CompressionSpec(bits=6, scale="channel"),
    CompressionSpec(bits=3, scale="tensor", block=128),
    CompressionSpec(topk=0.05, bits=8, scale="channel"),
    CompressionSpec(topk=0.1, bits=4, entropy="huffman"),
    CompressionSpec(topk=0.1, bits=4, entropy="ans"),
    CompressionSpec(topk=0.6, bits=2, entropy="ans", scale="tensor"),
    CompressionSpec(bits=8, entropy="huffman", block=32),
]
EDGES = {
    "empty": torch.zeros(0, 8),
    "one": torch.tensor([2.5]),
    "scalar": torch.tensor(-1.25),
    "constant": torch.full((10, 10), 3.0),
    "zeros": torch.zeros(64),
    "huge": torch.randn(50) * 1e35,
    "tiny": torch.randn(50) * 1e-35,
    "non-contiguous": torch.randn(20, 30).t()[::2],
    "fp16": torch.randn(7, 9).half(),
    "bf16": torch.randn(7, 9).bfloat16(),
}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.model_dump_json(exclude_defaults=True))
@pytest.mark.parametrize("name", list(EDGES))
def test_edge_tensors_round_trip_with_shape_and_dtype(spec, name):
    x = EDGES[name]
    y = decode(make_codec(spec).encode(x))
    assert y.shape == x.shape and y.dtype == x.dtype and y.device.type == "cpu"
    if name in ("empty", "zeros") or (name == "constant" and spec.topk is None and spec.rounding == "nearest"):
        assert torch.equal(y, x)
    if spec.topk is None and spec.bits is None and spec.dtype == "fp32":
        assert torch.equal(y, x)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.model_dump_json(exclude_defaults=True))
def test_both_backends_write_the_same_bytes_and_read_each_other(spec):
    x = torch.randn(16, 96)
    numba_payload = make_codec(spec, backend="numba").encode(x)
    torch_payload = make_codec(spec, backend="torch").encode(x)
    if spec.rounding == "nearest":
        assert numba_payload == torch_payload
    assert torch.equal(decode(numba_payload, backend="numba"), decode(numba_payload, backend="torch"))
    assert torch.equal(decode(torch_payload, backend="numba"), decode(torch_payload, backend="torch"))


def test_dense_values_cost_their_dtype():
    x = torch.randn(1000)
    for dtype, size in (("fp32", 4), ("fp16", 2), ("bf16", 2)):
        assert len(make_codec(CompressionSpec(dtype=dtype)).encode(x)) == 1000 * size + wire.header_bytes(1)


def test_topk_payload_is_index_set_plus_kept_values():
    x = torch.randn(100, 100)
    payload = make_codec(CompressionSpec(topk=0.1, bits=4, scale="tensor")).encode(x)
    header, sections = wire.unpack(payload)
    assert header.kept == 1000 and header.topk
    assert header.lengths["values"] == 500 and header.lengths["scales"] == 6
    bound_bits = 10_000 * indexset.binary_entropy(0.1)
    assert (header.lengths["index"] - 24) * 8 <= 1.15 * bound_bits
    y = decode(payload)
    assert int((y != 0).sum()) == 1000
    kept = y != 0
    assert x[kept].abs().min() >= x[~kept].abs().max()


def test_topk_one_is_dense():
    x = torch.randn(50)
    header, _ = wire.unpack(make_codec(CompressionSpec(topk=1.0, bits=8)).encode(x))
    assert not header.topk and header.kept == 50


def test_warmup_counts_training_steps_and_never_applies_without_one():
    codec = make_codec(CompressionSpec(topk=0.1, bits=2, warmup_steps=2))
    x = torch.randn(300)
    assert len(codec.encode(x)) < 200  # no train_step (evaluation, or a codec on its own): compressed
    sizes = []
    for step in range(3):
        codec.train_step = step
        sizes += [len(codec.encode(x)), len(codec.encode(x))]  # two micro-batches per training step
    assert sizes[:4] == [300 * 4 + wire.header_bytes(1)] * 4
    assert max(sizes[4:]) < 200
    assert codec.step == 7


def test_decode_to_a_device_and_header_fields():
    payload = make_codec(CompressionSpec(bits=5, scale="channel")).encode(torch.randn(4, 6, 8))
    value, header, keys = decode_parts(payload, device="cpu")
    assert (header.bits, header.scale, header.shape, keys) == (5, "channel", (4, 6, 8), None)
    assert decode(payload, device=torch.device("cpu")).shape == (4, 6, 8)


def test_integer_tensors_are_refused():
    with pytest.raises(CodecError, match="floating"):
        make_codec(CompressionSpec()).encode(torch.arange(5))


def test_spec_mapping_is_validated():
    with pytest.raises(ValueError, match="bits"):
        make_codec({"bits": 17})
    assert make_codec({"bits": 3}).spec.bits == 3
    with pytest.raises(ValueError, match="set bits"):
        make_codec({"entropy": "ans"})


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        make_codec(CompressionSpec(), backend="cuda-magic")


@pytest.mark.parametrize("spec", SPECS[3:], ids=lambda s: s.model_dump_json(exclude_defaults=True))
def test_flipped_or_truncated_payloads_raise_codec_error(spec):
    payload = make_codec(spec).encode(torch.randn(40, 50))
    for position in range(0, len(payload), max(1, len(payload) // 13)):
        corrupt = bytearray(payload)
        corrupt[position] ^= 0x01
        with pytest.raises(CodecError):
            decode(bytes(corrupt))
    for cut in (len(payload) // 2, len(payload) - 1):
        with pytest.raises(CodecError):
            decode(payload[:cut])


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 40), min_size=1, max_size=3),
    topk=st.one_of(st.none(), st.floats(0.01, 1.0)),
    bits=st.one_of(st.none(), st.integers(1, 16)),
    scale=st.sampled_from(["tensor", "channel", "block"]),
    block=st.sampled_from([2, 64, 100]),
    entropy=st.sampled_from([None, "huffman", "ans"]),
    seed=st.integers(0, 1000),
)
@example(shape=[2], topk=0.5, bits=1, scale="tensor", block=2, entropy=None, seed=72)  # [-1.0, -0.73]: -0.73 sent as 0
def test_round_trip_property(shape, topk, bits, scale, block, entropy, seed):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    spec = CompressionSpec(topk=topk, bits=bits, scale=scale, block=block, entropy=entropy if bits else None)
    payload = make_codec(spec).encode(x)
    y = decode(payload)
    assert y.shape == x.shape
    header, _ = wire.unpack(payload)
    n = x.numel()
    k = header.kept
    assert k == (n if topk is None or n == 0 else min(n, max(1, round(topk * n))))
    if bits and not entropy and not header.topk:
        assert header.lengths["values"] == math.ceil(n * bits / 8)
    if bits is None and topk is None:
        assert torch.equal(x, y)
    if n and bits:
        # never garbage: a kept value's error stays inside the range, a dropped one's is the value (sent as 0)
        bound = (x.max() - x.min()).item() if topk is None else max((x.max() - x.min()).item(), x.abs().max().item())
        assert float((x - y).abs().max()) <= bound + 1e-6
