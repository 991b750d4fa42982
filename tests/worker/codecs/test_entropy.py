import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.codecs import entropy
from worker.codecs.wire import CodecError


def _gaussian_symbols(n: int, bits: int, seed: int = 0) -> np.ndarray:
    levels = (1 << bits) - 1
    x = np.random.default_rng(seed).standard_normal(n)
    return np.clip(np.round((x + 4) / 8 * levels), 0, levels).astype(np.uint16)


@pytest.mark.parametrize("kind", ["huffman", "ans"])
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_round_trip_close_to_the_empirical_entropy(kind, bits):
    symbols = _gaussian_symbols(100_000, bits)
    model, values = entropy.encode(symbols, kind)
    assert np.array_equal(entropy.decode(memoryview(model), memoryview(bytes(values)), symbols.size, bits), symbols)
    bound = entropy.empirical_entropy_bits(symbols)
    if kind == "ans":
        assert len(values) * 8 <= 1.01 * bound + 64
    elif bits >= 4:
        assert len(values) * 8 <= 1.05 * bound + 64
    else:  # Huffman spends >= 1 bit per symbol, so skewed small alphabets sit up to 1 bit above
        assert len(values) * 8 <= bound + symbols.size + 64


def test_huffman_lengths_satisfy_kraft_and_limit():
    counts = np.concatenate([[10**9], np.ones(1 << 16 - 1, dtype=np.int64)])  # very skewed, 32768 symbols
    lengths = entropy.code_lengths(counts)
    assert lengths.max() <= entropy.MAX_LEN
    assert np.sum(2.0 ** -lengths[lengths > 0].astype(float)) <= 1.0


@pytest.mark.parametrize("kind", ["huffman", "ans"])
def test_all_sixteen_bit_symbols_and_single_symbol(kind):
    every = np.arange(1 << 16, dtype=np.uint16)
    model, values = entropy.encode(every, kind)
    assert np.array_equal(entropy.decode(memoryview(model), memoryview(bytes(values)), every.size, 16), every)
    one = np.full(1000, 7, dtype=np.uint16)
    model, values = entropy.encode(one, kind)
    assert np.array_equal(entropy.decode(memoryview(model), memoryview(bytes(values)), 1000, 4), one)


@pytest.mark.parametrize("kind", ["huffman", "ans"])
def test_corrupt_model_or_stream_is_refused(kind):
    symbols = _gaussian_symbols(5000, 4)
    model, values = entropy.encode(symbols, kind)
    with pytest.raises(CodecError):
        entropy.decode(memoryview(model[:10]), memoryview(bytes(values)), symbols.size, 4)
    with pytest.raises(CodecError):
        entropy.decode(memoryview(model), memoryview(bytes(values)[: len(values) // 2 // 4 * 4]), symbols.size, 4)


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["huffman", "ans"]), bits=st.integers(1, 12), data=st.data())
def test_round_trip_property(kind, bits, data):
    values = data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=400))
    symbols = np.array(values, dtype=np.uint16)
    model, stream = entropy.encode(symbols, kind)
    assert np.array_equal(entropy.decode(memoryview(model), memoryview(bytes(stream)), symbols.size, bits), symbols)


@settings(max_examples=50, deadline=None)
@given(counts=st.lists(st.integers(0, 10**9), min_size=2, max_size=300).filter(lambda c: sum(1 for v in c if v) >= 2))
def test_ans_frequencies_sum_to_the_scale_and_keep_every_present_symbol(counts):
    from worker.codecs import ans

    counts = np.array(counts, dtype=np.int64)
    precision, freq = ans.choose_precision(counts)
    assert 12 <= precision <= 16 and int(freq.sum()) == 1 << precision
    assert np.array_equal(freq > 0, counts > 0)
    finest = ans.normalize(counts, 16)
    assert ans.cross_entropy_bits(counts, freq, precision) <= 1.001 * ans.cross_entropy_bits(counts, finest, 16) + 64


def test_ans_takes_a_finer_scale_for_skewed_counts():
    from worker.codecs import ans

    flat = np.full(16, 1000, dtype=np.int64)
    skewed = np.concatenate([[10**8], np.ones(200, dtype=np.int64)])  # p(top) > 0.999998
    assert ans.choose_precision(flat)[0] == 12
    assert ans.choose_precision(skewed)[0] == 16


def test_ans_streams_that_do_not_end_in_the_initial_state_are_refused():
    from worker.codecs import ans

    symbols = _gaussian_symbols(3 * ans.CHUNK + 123, 4)  # three whole streams and a short one
    offset, counts = entropy._model(symbols)
    freq = ans.normalize(counts, 12)
    sizes, words = ans.encode(symbols - np.uint16(offset), freq, 12)
    assert sizes.size == 4 and int(sizes.sum()) == words.size
    decoded = ans.decode(memoryview(words.tobytes()), sizes, freq, 12, symbols.size)
    assert np.array_equal(decoded + np.uint16(offset), symbols)
    flipped = words.copy()
    flipped[int(sizes[0]) + 100] ^= 0x0400  # one bit inside the second stream
    with pytest.raises(CodecError, match="ANS stream is corrupt"):
        ans.decode(memoryview(flipped.tobytes()), sizes, freq, 12, symbols.size)
    with pytest.raises(CodecError, match="length table"):
        ans.decode(memoryview(words.tobytes()), sizes[:3], freq, 12, symbols.size)
    with pytest.raises(CodecError, match="sum to"):
        ans.decode(memoryview(words.tobytes()), sizes, freq * 2, 12, symbols.size)
