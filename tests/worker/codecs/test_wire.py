import numpy as np
import pytest

from worker.codecs import wire
from worker.codecs.wire import CodecError, Header


def _payload() -> bytes:
    header = Header(shape=(2, 3), bits=4, kept=6)
    return wire.pack(header, {"scales": b"abcdef", "values": np.arange(3, dtype=np.uint8)})


def test_round_trip_keeps_header_and_sections():
    header, sections = wire.unpack(_payload())
    assert header.shape == (2, 3) and header.bits == 4 and header.kept == 6 and header.numel == 6
    assert bytes(sections["scales"]) == b"abcdef"
    assert bytes(sections["values"]) == b"\x00\x01\x02"
    assert header.lengths == {"keys": 0, "index": 0, "scales": 6, "values": 3, "model": 0}


def test_size_is_fixed_header_plus_sections():
    assert len(_payload()) == wire.header_bytes(2) + 6 + 3


@pytest.mark.parametrize("position", range(0, 90, 7))
def test_any_flipped_byte_is_detected(position):
    payload = bytearray(_payload())
    payload[position % len(payload)] ^= 0x10
    with pytest.raises(CodecError):
        wire.unpack(bytes(payload))


@pytest.mark.parametrize("cut", [0, 3, 10, 40, -1])
def test_truncated_payload_raises(cut):
    with pytest.raises(CodecError, match="short|truncated|describes"):
        wire.unpack(_payload()[:cut])


def test_extended_payload_raises():
    with pytest.raises(CodecError, match="truncated or extended"):
        wire.unpack(_payload() + b"\x00")


@pytest.mark.parametrize("foreign", [b"", b"hello world" * 20, np.random.default_rng(0).bytes(500), b"\x80\x04N." * 30])
def test_foreign_bytes_raise(foreign):
    with pytest.raises(CodecError):
        wire.unpack(foreign)


def test_newer_version_is_named():
    payload = bytearray(_payload())
    payload[4] = 9
    with pytest.raises(CodecError, match="v9"):
        wire.unpack(bytes(payload))


def test_non_bytes_raise():
    with pytest.raises(CodecError, match="bytes"):
        wire.unpack("not bytes")  # type: ignore[arg-type]


def test_unknown_enum_is_rejected_at_write():
    with pytest.raises(CodecError, match="scale"):
        wire.pack(Header(shape=(1,), scale="row"), {})


def test_absurd_shapes_are_refused_before_any_allocation():
    payload = wire.pack(Header(shape=(1 << 30, 1 << 30, 1 << 30), kept=0), {})
    with pytest.raises(CodecError, match="beyond"):
        wire.unpack(payload)
