"""The self-describing payload: a versioned header, five length-prefixed sections, a 32-bit checksum.

The checksum is the low 32 bits of xxh3-64 over everything before it: zlib's CRC32 runs at ~1 GB/s
here and capped every round trip, xxh3 runs at ~9 GB/s (v1 payloads used CRC32). v3 changed the ANS
entropy section (16-bit rANS words and a frequency table, see ans.py). v4 names its checksum in a
header byte (a former pad byte, so v3 payloads read as "xxh3"): "xxh3", or "words", a sum of mixed
32-bit words that a GPU computes in parallel (xxh3 is sequential across its stripes), see `words_checksum`.
"""

from __future__ import annotations

import math
import struct
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xxhash

if sys.byteorder != "little":  # the bit layouts below are little-endian words
    raise ImportError("worker.codecs needs a little-endian machine")

MAGIC = b"SPCW"
VERSION = 4
READABLE = (3, 4)  # v3 is v4 with the checksum byte always 0 (xxh3)
MAX_NUMEL = 1 << 36
SECTIONS = ("keys", "index", "scales", "values", "model")

DTYPES = ("float32", "float16", "bfloat16", "float64")
SCALES = ("tensor", "channel", "block")
ENTROPY = (None, "huffman", "ans")
FEEDBACK = (None, "ef", "delta", "delta_base")
CHECKSUMS = ("xxh3", "words")

# magic, version, dtype, value_dtype, ndim, bits, scale, entropy, feedback, topk?, checksum, block, kept
_FIXED = struct.Struct("<4sBBBBBBBBBBxxIQ")
_LENGTHS = struct.Struct("<5Q")
_CRC = struct.Struct("<I")


class CodecError(ValueError):
    """A payload that cannot be decoded, or a tensor that the codec cannot encode."""


@dataclass
class Header:
    """Everything `decode` needs besides the section bytes."""

    shape: tuple[int, ...]
    dtype: str = "float32"  # dtype of the decoded tensor (the encoder's input dtype)
    value_dtype: str = "float32"  # how unquantized values travel
    bits: int = 0  # 0 = values are not quantized
    scale: str = "block"
    block: int = 64
    entropy: str | None = None
    feedback: str | None = None
    topk: bool = False
    kept: int = 0  # number of values sent (n when dense)
    lengths: dict[str, int] = field(default_factory=dict)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _code(table: tuple, value: object, what: str) -> int:
    if value not in table:
        raise CodecError(f"cannot write {what}={value!r}; known: {table}")
    return table.index(value)


def _lookup(table: tuple, code: int, what: str) -> Any:
    if code >= len(table):
        raise CodecError(f"payload has unknown {what} code {code}; is it from a newer slimpipe?")
    return table[code]


def _as_bytes(section: Any) -> memoryview:
    if isinstance(section, np.ndarray):
        section = np.ascontiguousarray(section).view(np.uint8).reshape(-1)
    return memoryview(section).cast("B")


def head_bytes(header: Header, lengths: list[int], checksum: str = "xxh3") -> bytes:
    """The header of a payload whose sections (in SECTIONS order) have `lengths` bytes."""
    return _FIXED.pack(
        MAGIC, VERSION, _code(DTYPES, header.dtype, "dtype"), _code(DTYPES, header.value_dtype, "value_dtype"),
        len(header.shape), header.bits, _code(SCALES, header.scale, "scale"), _code(ENTROPY, header.entropy, "entropy"),
        _code(FEEDBACK, header.feedback, "feedback"), int(header.topk), _code(CHECKSUMS, checksum, "checksum"),
        header.block, header.kept,
    ) + struct.pack(f"<{len(header.shape)}Q", *header.shape) + _LENGTHS.pack(*lengths)


def pack(header: Header, sections: dict[str, object], checksum: str = "xxh3") -> bytes:
    """Header, sections (bytes-like or numpy arrays) in SECTIONS order, then the checksum of all before it."""
    parts = [_as_bytes(sections.get(name, b"")) for name in SECTIONS]
    head = head_bytes(header, [p.nbytes for p in parts], checksum)
    if checksum == "words":
        return b"".join([head, *parts, _CRC.pack(words_checksum(b"".join([head, *parts])))])
    digest = xxhash.xxh3_64(head)
    for p in parts:
        digest.update(p)
    return b"".join([head, *parts, _CRC.pack(digest.intdigest() & 0xFFFFFFFF)])


WORD_STEP = 0x9E3779B9  # word i is offset by i * WORD_STEP before mixing, so moved words change the sum


def fmix32(h: np.ndarray) -> np.ndarray:
    """murmur3's 32-bit finalizer (a bijection), on uint32 arrays."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def words_checksum(data: bytes | bytearray | memoryview) -> int:
    """The "words" checksum: data zero-padded to 32-bit little-endian words w_i, then the sum mod 2^32
    of fmix32(w_i + i * WORD_STEP). Any one changed word changes it; each word is mixed on its own, so
    a GPU sums it in one parallel pass (device_wire.py computes the same number)."""
    view = memoryview(data).cast("B")
    words = np.zeros((view.nbytes + 3) // 4, dtype=np.uint32)
    words.view(np.uint8)[: view.nbytes] = np.frombuffer(view, dtype=np.uint8)
    with np.errstate(over="ignore"):
        mixed = fmix32(words + np.arange(words.size, dtype=np.uint32) * np.uint32(WORD_STEP))
    return int(mixed.sum(dtype=np.uint64) & np.uint64(0xFFFFFFFF))


def unpack(payload: bytes | bytearray | memoryview) -> tuple[Header, dict[str, memoryview]]:
    """Parse and verify a payload; raise CodecError for anything foreign, truncated or corrupt."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise CodecError(f"a payload is bytes, not {type(payload).__name__}")
    view = memoryview(payload).cast("B")
    header, checksum, at = read_head(view, view.nbytes)
    (crc,) = _CRC.unpack_from(view, view.nbytes - _CRC.size)
    body = view[: view.nbytes - _CRC.size]
    if (words_checksum(body) if checksum == "words" else xxhash.xxh3_64_intdigest(body) & 0xFFFFFFFF) != crc:
        raise CodecError("payload checksum mismatch: the bytes were corrupted in transit")
    return header, section_slices(view, header, at)


def section_slices(data: Any, header: Header, at: int) -> dict[str, Any]:
    """The sections of a payload (a memoryview, or a uint8 tensor on any device) as slices of it, in
    wire order from offset `at` (where the head ends)."""
    sections = {}
    for name in SECTIONS:
        sections[name] = data[at : at + header.lengths[name]]
        at += header.lengths[name]
    return sections


MAX_HEAD = _FIXED.size + 8 * 255 + _LENGTHS.size  # the longest header: enough bytes for `read_head`


def read_head(view: memoryview, total: int) -> tuple[Header, str, int]:
    """(Header, checksum name, offset of the first section) from the start of a `total`-byte payload;
    checks everything but the checksum. `view` may hold only the first MAX_HEAD bytes."""
    if total < _FIXED.size + _LENGTHS.size + _CRC.size or view.nbytes < min(total, _FIXED.size):
        raise CodecError(f"payload of {total} bytes is too short to be a slimpipe codec payload")
    fixed = _FIXED.unpack_from(view, 0)
    if fixed[0] != MAGIC:
        raise CodecError(f"payload does not start with {MAGIC!r}; it is not a slimpipe codec payload")
    if fixed[1] not in READABLE:
        raise CodecError(f"payload is wire format v{fixed[1]}; this slimpipe reads v{READABLE[0]}-v{READABLE[-1]}")
    ndim = fixed[4]
    at = _FIXED.size + 8 * ndim
    if total < at + _LENGTHS.size + _CRC.size or view.nbytes < at + _LENGTHS.size:
        raise CodecError("payload is truncated inside its header")
    shape = struct.unpack_from(f"<{ndim}Q", view, _FIXED.size)
    lengths = _LENGTHS.unpack_from(view, at)
    at += _LENGTHS.size
    if at + sum(lengths) + _CRC.size != total:
        raise CodecError(f"payload is {total} bytes but its header describes {at + sum(lengths) + _CRC.size}; "
                         "it was truncated or extended")
    header = Header(
        shape=tuple(shape),
        dtype=_lookup(DTYPES, fixed[2], "dtype"),
        value_dtype=_lookup(DTYPES, fixed[3], "value_dtype"),
        bits=fixed[5],
        scale=_lookup(SCALES, fixed[6], "scale"),
        entropy=_lookup(ENTROPY, fixed[7], "entropy"),
        feedback=_lookup(FEEDBACK, fixed[8], "feedback"),
        topk=bool(fixed[9]),
        block=fixed[11],
        kept=fixed[12],
        lengths=dict(zip(SECTIONS, lengths, strict=True)),
    )
    if any(d > MAX_NUMEL for d in shape) or header.numel > MAX_NUMEL:
        raise CodecError(f"payload claims a tensor of shape {tuple(shape)}, beyond {MAX_NUMEL} elements")
    if header.bits > 16 or header.kept > header.numel:
        raise CodecError(f"payload header is inconsistent (bits={header.bits}, kept={header.kept} of {header.numel})")
    return header, _lookup(CHECKSUMS, fixed[10], "checksum"), at


def peek_numel(payload) -> int:
    """Element count from an unverified header (0 if unreadable); only for sizing work, never trusted."""
    try:
        ndim = _FIXED.unpack_from(payload, 0)[4]
        return math.prod(struct.unpack_from(f"<{ndim}Q", payload, _FIXED.size))
    except (struct.error, TypeError):
        return 0


def header_bytes(ndim: int) -> int:
    """Fixed cost of a payload for a tensor of `ndim` dimensions."""
    return _FIXED.size + 8 * ndim + _LENGTHS.size + _CRC.size


def aligned_words(section: memoryview | bytes, extra_words: int = 1) -> np.ndarray:
    """The section's bytes copied into a zero-padded uint64 array (aligned for the unpack kernels)."""
    nbytes = memoryview(section).nbytes
    words = np.zeros((nbytes + 7) // 8 + extra_words, dtype=np.uint64)
    words.view(np.uint8)[:nbytes] = np.frombuffer(section, dtype=np.uint8)
    return words
