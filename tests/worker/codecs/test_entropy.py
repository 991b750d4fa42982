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


def _textbook_rans(symbols: np.ndarray, freq: np.ndarray, precision: int, chunk: int) -> tuple[list[int], list[int]]:
    """The format's definition, one stream at a time in Python integers: x = (x // f << precision) + x % f + cum,
    a 16-bit word out first whenever x >= f << (32 - precision); the final state leads each stream."""
    cum = np.concatenate([[0], np.cumsum(freq)[:-1]]).tolist()
    freq_l, sizes, words = freq.tolist(), [], []
    for start in range(0, symbols.size, chunk):
        x, out = 1 << 16, []
        for s in reversed(symbols[start : start + chunk].tolist()):
            f = freq_l[s]
            if x >= f << (32 - precision):
                out.append(x & 0xFFFF)
                x >>= 16
            x = ((x // f) << precision) + x % f + cum[s]
        stream = [x >> 16, x & 0xFFFF, *reversed(out)]
        sizes.append(len(stream))
        words.extend(stream)
    return sizes, words


@pytest.mark.parametrize("bits,precision", [(4, 12), (3, 16), (8, 14)])
def test_ans_writes_the_textbook_streams_and_reads_them_back(bits, precision):
    """The coders multiply instead of dividing and run 2 (encode) or 4 (decode) streams side by side; the
    bytes are the one-stream-at-a-time definition's. 7 whole streams and a short one: encoded as 3 pairs and
    2 singles, decoded as a quad, a pair and 2 singles."""
    from worker.codecs import ans

    symbols = _gaussian_symbols(7 * ans.CHUNK + 77, bits)
    offset, counts = entropy._model(symbols)
    freq = ans.normalize(counts, precision)
    shifted = symbols - np.uint16(offset)
    sizes, words = ans.encode(shifted, freq, precision)
    want_sizes, want_words = _textbook_rans(shifted, freq, precision, ans.CHUNK)
    assert sizes.tolist() == want_sizes and words.tolist() == want_words
    assert np.array_equal(ans.decode(memoryview(words.tobytes()), sizes, freq, precision, symbols.size), shifted)
    # A stream cut one word short (its neighbour one word long, so the total still matches) cannot end
    # fully read in its initial state, in whichever path decodes it. (A flipped bit is the checksum's to
    # catch: rANS decodes some to other symbols without noticing.)
    for stream in (1, 3, 5, 6, 7):  # in the quad (two), in the pair, alone (a whole one, the short one)
        cut = sizes.copy()
        cut[stream] -= 1
        cut[stream - 1] += 1
        with pytest.raises(CodecError, match="ANS stream is corrupt"):
            ans.decode(memoryview(words.tobytes()), cut, freq, precision, symbols.size)


def test_ans_division_by_magic_numbers_is_exact_for_every_frequency_and_32_bit_state():
    """Granlund & Montgomery's unsigned division as the encoder runs it, against //, for every frequency
    of a 16-bit scale and states at the edges of the 32-bit range and in between."""
    import numba as nb

    from worker.codecs import ans

    @nb.njit
    def mismatches(freq, xs, cum, magic, sh1, sh2, cmpl, precision):
        bad = 0
        for s in range(freq.size):
            f = np.uint64(freq[s])
            for x in xs:
                want = ((x // f) << np.uint64(precision)) + x % f + cum[s]
                if ans._put(x, s, cum, magic, sh1, sh2, cmpl) != want:
                    bad += 1
        return bad

    freq = np.arange(1, (1 << 16) + 1, dtype=np.int64)  # every frequency (not one model: the tables are per symbol)
    cum, magic, sh1, sh2, cmpl, _ = ans._encoder_tables(freq, 16)
    rng = np.random.default_rng(0)
    xs = np.concatenate([np.array([0, 1, 2, 3, (1 << 16) - 1, 1 << 16, (1 << 31) - 1, 1 << 31, (1 << 32) - 2,
                                   (1 << 32) - 1], dtype=np.uint64), rng.integers(0, 1 << 32, 30, dtype=np.uint64)])
    assert mismatches(freq, xs, cum, magic, sh1, sh2, cmpl, 16) == 0
