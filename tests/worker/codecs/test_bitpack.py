import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.codecs import bitpack
from worker.codecs.wire import aligned_words


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("n", [0, 1, 7, 64, 65, 1000])
def test_every_width_round_trips_in_exact_size(bits, n):
    symbols = np.random.default_rng(bits).integers(0, 1 << bits, n).astype(np.uint16)
    packed = bitpack.pack(symbols, bits)
    assert packed.size == (n * bits + 7) // 8
    assert np.array_equal(bitpack.unpack(aligned_words(packed), bits, n), symbols)


@pytest.mark.parametrize("bits", [1, 3, 8, 11, 16])
def test_torch_layout_matches_numba_layout(bits):
    symbols = np.random.default_rng(1).integers(0, 1 << bits, 333).astype(np.uint16)
    packed = bitpack.pack(symbols, bits)
    packed_torch = bitpack.pack_torch(torch.from_numpy(symbols.astype(np.int32)), bits)
    assert bytes(packed) == packed_torch.numpy().tobytes()
    assert np.array_equal(bitpack.unpack_torch(packed_torch, bits, 333).numpy(), symbols)


def test_layout_is_lsb_first():
    assert bytes(bitpack.pack(np.array([1, 0, 3], dtype=np.uint16), 2)) == bytes([0b110001])


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 16), data=st.data())
def test_round_trip_property(bits, data):
    values = data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=300))
    symbols = np.array(values, dtype=np.uint16)
    packed = bitpack.pack(symbols, bits)
    assert len(packed) == bitpack.packed_bytes(len(values), bits)
    assert np.array_equal(bitpack.unpack(aligned_words(packed), bits, len(values)), symbols)


def test_short_stream_is_refused():
    with pytest.raises(ValueError, match="shorter"):
        bitpack.unpack(np.zeros(1, dtype=np.uint64), 16, 100)
