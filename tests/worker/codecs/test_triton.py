"""The triton backend writes the numba backend's bytes, run by Triton's interpreter on CPU tensors."""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before any triton kernel is defined: kernels run on CPU tensors

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from slimpipe.spec import CompressionSpec  # noqa: E402
from worker.codecs import CodecError, chain, decode, device_wire, make_codec, topk, wire  # noqa: E402
from worker.codecs import triton_quantize as quantize_errors  # noqa: E402


def _device_payload(x: torch.Tensor, seed: int = 0, **fields) -> tuple[bytes, torch.Tensor]:
    """(numba payload, triton device payload) for one spec and tensor."""
    spec = CompressionSpec(**fields)
    cpu = make_codec(spec, backend="numba", seed=seed).encode(x)
    return cpu, make_codec(spec, backend="triton", seed=seed).encode(x, device_payload=True)


def _words_version(payload: bytes) -> bytes:
    """The same payload with the "words" checksum."""
    header, sections = wire.unpack(payload)
    return wire.pack(header, {name: bytes(view) for name, view in sections.items()}, checksum="words")


def _check_identical(x: torch.Tensor, *, decoded: bool = True, **fields) -> None:
    """The device payload holds the CPU payload's bytes (checksum apart) and decodes to its values.
    (The interpreter pays ~0.1 s a kernel launch, so each check launches as few as it can.)"""
    cpu, device = _device_payload(x, **fields)
    assert bytes(device.numpy()) == _words_version(cpu), fields
    if decoded:
        assert torch.equal(decode(device), decode(cpu, backend="numba")), fields


@pytest.mark.parametrize("bits", range(1, 17))
def test_every_width_and_scale_writes_the_cpu_bytes(bits):
    torch.manual_seed(bits)
    x = torch.randn(3, 5, 83) * 4 + 1  # 1245 values: a partial block, channels along dim 1 of a 3-D tensor
    _check_identical(x, bits=bits, scale="block")
    _check_identical(x, bits=bits, scale="tensor")
    _check_identical(x, bits=bits, scale="channel")


def test_host_bytes_from_the_triton_backend_are_the_cpu_bytes():
    torch.manual_seed(1)
    x = torch.randn(40, 31)
    for fields in ({"bits": 5}, {"topk": 0.1, "bits": 3, "scale": "channel"}):
        spec = CompressionSpec(**fields)
        cpu = make_codec(spec, backend="numba").encode(x)
        assert make_codec(spec, backend="triton").encode(x) == cpu
        assert torch.equal(decode(cpu, backend="triton"), decode(cpu, backend="numba"))


@pytest.mark.parametrize("bits", [3, 13])
def test_other_block_sizes_stochastic_rounding_and_odd_sizes(bits):
    torch.manual_seed(bits)
    x = torch.randn(1245) * 4 + 1
    _check_identical(x, bits=bits, block=24)  # fused kernel, block not a power of two
    _check_identical(x, bits=bits, block=100)  # block % 8 != 0: reduced with torch, then quantized
    _check_identical(x, bits=bits, block=2048)  # beyond the fused kernel's blocks
    _check_identical(x, bits=bits, rounding="stochastic", seed=bits)
    _check_identical(x, bits=bits, rounding="stochastic", scale="tensor")
    for n in (1, 63, 65):
        _check_identical(x[:n], bits=bits)


@pytest.mark.parametrize("ratio", [0.5, 0.1, 0.01])
def test_topk_keeps_the_cpu_positions(ratio):
    torch.manual_seed(int(ratio * 100))
    x = torch.randn(5000)
    for n in (1, 63, 65):
        _check_identical(x[:n], topk=ratio, bits=4, decoded=n == 65)
    _check_identical(x, topk=ratio)
    _check_identical(x.reshape(50, 100), topk=ratio, bits=5, scale="channel")
    _check_identical(x, topk=ratio, bits=3, scale="tensor", decoded=False)
    _check_identical(x, topk=ratio, dtype="bf16", decoded=False)


@pytest.mark.parametrize("ratio", [0.5, 0.01])
def test_topk_of_large_tensors_takes_the_cpu_threshold(ratio):
    torch.manual_seed(5)
    x = torch.randn(topk.EXACT_BELOW + 1)  # the sampled bracket and histogram cut, not the exact selection
    cpu, device = _device_payload(x, topk=ratio, bits=2)
    assert bytes(device.numpy()) == _words_version(cpu)
    assert wire.unpack(cpu)[0].kept == pytest.approx(ratio * x.numel(), rel=0.005)  # the histogram cut


def test_a_million_values_plus_seven_round_trip_top_k_and_4_bits():
    torch.manual_seed(7)
    x = torch.randn((1 << 20) + 7)
    cpu, device = _device_payload(x, topk=0.1, bits=4)
    assert bytes(device.numpy()) == _words_version(cpu)
    assert wire.unpack(cpu)[0].kept == pytest.approx(0.1 * x.numel(), rel=0.005)
    assert torch.equal(decode(device), decode(cpu))


@pytest.mark.parametrize("shape", [(0,), (0, 7)])
@pytest.mark.parametrize("fields", [{"bits": 4}, {"bits": 4, "scale": "channel"}, {"topk": 0.1, "bits": 8}, {"dtype": "fp16"}])
def test_empty_tensors(shape, fields):
    x = torch.zeros(shape)
    cpu, device = _device_payload(x, **fields)
    assert bytes(device.numpy()) == _words_version(cpu)
    assert decode(device).shape == shape


@pytest.mark.parametrize("value", [0.0, -2.5, 1e30])
def test_constant_tensors(value):
    x = torch.full((4, 300), value)
    for fields in ({"bits": 1}, {"bits": 16, "scale": "channel"}, {"topk": 0.1, "bits": 4}):
        _check_identical(x, decoded=False, **fields)
    assert torch.equal(decode(make_codec(CompressionSpec(bits=3), backend="triton").encode(x, device_payload=True)), x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_are_refused_with_the_cpu_message(bad):
    x = torch.randn(4, 100)
    x[2, 17] = bad
    for fields in ({"bits": 4}, {"bits": 4, "block": 100}, {"bits": 4, "scale": "tensor"}, {"bits": 4, "scale": "channel"},
                   {"topk": 0.5, "bits": 4, "scale": "channel"}):
        spec = CompressionSpec(**fields)
        with pytest.raises(CodecError) as cpu_error:
            make_codec(spec, backend="numba").encode(x)
        with pytest.raises(CodecError) as gpu_error:
            make_codec(spec, backend="triton").encode(x, device_payload=True)
        assert str(gpu_error.value) == str(cpu_error.value) == quantize_errors.NOT_FINITE, fields


def test_a_range_beyond_float32_steps_is_refused_as_on_the_cpu():
    x = torch.tensor([-3e38, 3e38] * 40)
    for backend in ("numba", "triton"):
        for scale in ("block", "tensor"):  # the fused block kernel, and the scales kernel of the two-pass path
            with pytest.raises(CodecError, match="overflows float32 steps"):
                make_codec(CompressionSpec(bits=1, scale=scale), backend=backend).encode(x)


def test_half_precision_inputs_and_entropy_stage_match():
    torch.manual_seed(3)
    x = torch.randn(40, 50)
    for dtype in (torch.float16, torch.bfloat16):
        _check_identical(x.to(dtype), bits=6, decoded=False)
        assert decode(make_codec(CompressionSpec(bits=6), backend="triton").encode(x.to(dtype), device_payload=True)).dtype == dtype
    _check_identical(x, bits=4, entropy="ans")
    _check_identical(x, topk=0.1, bits=4, entropy="huffman")


def test_feedback_codecs_stay_in_step_with_the_cpu_backend():
    torch.manual_seed(4)
    keys = torch.arange(8)
    for feedback in ("ef", "delta"):
        spec = CompressionSpec(topk=0.1, bits=4, feedback=feedback, warmup_steps=1)
        cpu, gpu = make_codec(spec, backend="numba"), make_codec(spec, backend="triton")
        for _ in range(3):
            x = torch.randn(8, 300)
            assert gpu.encode(x, keys) == cpu.encode(x, keys)


def test_words_checksum_is_the_same_on_the_device_and_in_numpy():
    rng = np.random.default_rng(0)
    for size in (0, 1, 3, 4, 5, 1023, 70_001, 300_003):  # the last takes two programs under the interpreter
        data = rng.integers(0, 256, size + 3, dtype=np.uint8)
        for start in range(4):  # word-aligned (read as words) and not (read as bytes)
            part = torch.from_numpy(data)[start : start + size]
            assert int(device_wire.words_checksum(part)) == wire.words_checksum(part.numpy().tobytes()), (size, start)


@pytest.mark.parametrize("fields", [{"topk": 0.1, "bits": 4}, {"bits": 4}])
def test_corrupt_or_truncated_device_payloads_are_refused(fields):
    """A dense b-bit payload's checksum is compared after its dequantize is queued; still refused."""
    payload = make_codec(CompressionSpec(**fields), backend="triton").encode(torch.randn(4, 1000), device_payload=True)
    assert torch.equal(decode(payload), decode(payload.clone()))
    for at in (150, payload.numel() // 2, payload.numel() - 1):  # past the 112-byte header
        flipped = payload.clone()
        flipped[at] ^= 0x10
        with pytest.raises(CodecError, match="checksum mismatch"):
            decode(flipped)
    with pytest.raises(CodecError, match="truncated or extended"):
        decode(payload[:-3])
    swapped = payload.clone()
    swapped[100:104], swapped[104:108] = payload[104:108], payload[100:104]
    if not torch.equal(swapped, payload):
        with pytest.raises(CodecError, match="checksum mismatch"):
            decode(swapped)


def test_v3_payloads_still_decode_and_unknown_checksums_are_named():
    x = torch.randn(500)
    payload = bytearray(make_codec(CompressionSpec(bits=4)).encode(x))
    v3 = bytearray(payload)
    v3[4] = 3  # v3 had a zero pad byte where v4 names the checksum (0 = xxh3)
    v3[-4:] = (wire.xxhash.xxh3_64_intdigest(bytes(v3[:-4])) & 0xFFFFFFFF).to_bytes(4, "little")
    assert torch.equal(decode(bytes(v3)), decode(bytes(payload)))
    unknown = bytearray(payload)
    unknown[13] = 7  # the checksum byte
    with pytest.raises(CodecError, match="unknown checksum code 7"):
        decode(bytes(unknown))
    v5 = bytearray(payload)
    v5[4] = 5
    with pytest.raises(CodecError, match="wire format v5; this slimpipe reads v3-v4"):
        decode(bytes(v5))


def test_auto_picks_torch_for_gpu_tensors_and_numba_for_cpu_ones_triton_is_opt_in(monkeypatch):
    monkeypatch.delenv(chain.GPU_BACKEND_ENV, raising=False)
    assert chain.pick_backend("auto", torch.device("cuda")) == "torch"
    assert chain.pick_backend("triton", torch.device("cuda")) == "triton"
    assert chain.pick_backend("auto", torch.device("cpu")) == "numba"
    monkeypatch.setenv(chain.GPU_BACKEND_ENV, "triton")  # a GPU worker's opt-in; CPU tensors stay on numba
    assert chain.pick_backend("auto", torch.device("cuda")) == "triton"
    assert chain.pick_backend("auto", torch.device("cpu")) == "numba"
    assert chain.pick_backend("torch", torch.device("cuda")) == "torch"  # an explicit backend wins
    monkeypatch.setenv(chain.GPU_BACKEND_ENV, "trtion")
    with pytest.raises(ValueError, match="SLIMPIPE_GPU_CODECS must be torch or triton .* not 'trtion'"):
        make_codec(CompressionSpec(bits=4))
    assert make_codec(CompressionSpec(bits=4), backend="numba").backend == "numba"
    monkeypatch.delenv(chain.GPU_BACKEND_ENV)
    with pytest.raises(ValueError, match="device payloads need backend 'triton'"):
        make_codec(CompressionSpec(bits=4), backend="numba").encode(torch.randn(10), device_payload=True)


def test_step_std_is_refused_with_the_backend_that_has_it():
    spec = CompressionSpec(bits=8, step_std=0.7, entropy="ans")
    with pytest.raises(CodecError, match="step_std is not in the triton backend yet; use backend: torch"):
        make_codec(spec, backend="triton").encode(torch.randn(256))
    with pytest.raises(CodecError, match="rate is not in the triton backend yet; use backend: torch"):
        make_codec(CompressionSpec(bits=8, rate=2.0, entropy="ans"), backend="triton").encode(torch.randn(256))


def test_gpu_check_compares_every_boundary_tensor_with_numba_and_keeps_the_ones_triton_refuses(tmp_path, monkeypatch):
    from benchmarks import gpu_triton_check
    from worker.codecs import triton_chain, triton_quantize

    monkeypatch.setenv("OUT", str(tmp_path))
    clean = gpu_triton_check.boundary_check("cpu", 8, "tiny_cnn")
    assert clean["error"] is None and clean["anomalies"] == [] and clean["saved"] == []
    assert clean["calls"] == 16  # 2 boundaries x 4 micro-batches x forward and backward

    real, seen = triton_chain.encode, []

    def refuse_third(x, spec, **options):  # what the H200 did to a finite gradient on 2026-11-30
        seen.append(1)
        if len(seen) == 3:
            raise CodecError(triton_quantize.NOT_FINITE)
        return real(x, spec, **options)

    monkeypatch.setattr(triton_chain, "encode", refuse_third)
    found = gpu_triton_check.boundary_check("cpu", 8, "tiny_cnn")
    assert found["error"] is None and found["calls"] == 16  # numba's bytes went on: the step finished
    [anomaly] = found["anomalies"]
    assert anomaly["call"] == 2 and anomaly["finite"] is True and anomaly["triton"].startswith("refused: tensor has NaN")
    assert found["saved"] == [str(tmp_path / "boundary_2_refused.pt")]
    assert list(torch.load(found["saved"][0]).shape) == anomaly["shape"]


def test_in_process_channels_on_the_triton_backend_keep_payloads_on_the_device():
    from worker.pipeline.boundary import Channel

    torch.manual_seed(2)
    x = torch.randn(6, 300)
    spec = CompressionSpec(topk=0.2, bits=5)
    on_device, on_host = Channel(spec, seed=1), Channel(spec, seed=1)
    on_device.sender.backend = on_device.receiver.backend = "triton"
    encoded: list = []
    real_encode = on_device.sender.encode
    def recording(*args, **kwargs):
        encoded.append(real_encode(*args, **kwargs))
        return encoded[-1]

    on_device.sender.encode = recording
    assert on_device.device_payloads(x) and not on_host.device_payloads(x)
    for mb in range(2):
        assert torch.equal(on_device.send(x, mb), on_host.send(x, mb))
    assert all(isinstance(p, torch.Tensor) and p.dtype == torch.uint8 for p in encoded)
    assert on_device.stats.transfers == on_host.stats.transfers  # the same wire bytes, counted the same
    assert on_device.stats.rel_error == on_host.stats.rel_error > 0


def test_nan_is_never_a_top_k_candidate_on_the_threshold_path_as_on_the_cpu():
    torch.manual_seed(0)
    x = torch.randn(600_000)  # past topk.EXACT_BELOW: sample, bracket, histogram
    x[::1000] = float("nan")
    spec = CompressionSpec(topk=0.1, dtype="fp16")  # no quantizer to refuse the NaN
    payload = make_codec(spec, backend="triton").encode(x)
    assert payload == make_codec(spec, backend="numba").encode(x)
    assert not torch.isnan(decode(payload)).any()
