"""wire.py's payload as one device uint8 tensor: assembled, checksummed and parsed on the device.

A `DevicePayload` allocates the whole payload once its section lengths are known; kernels write
their sections straight into its slices, then `finish` writes the checksum: "words" summed on the
device in one parallel pass (wire.words_checksum), or "xxh3" over a host copy (the CPU path's
bytes). Only the header (tens of bytes) crosses to or from the host.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from worker.codecs import wire
from worker.codecs.triton_bits import tile
from worker.codecs.wire import SECTIONS, CodecError, Header


@triton.jit
def _fmix32(h):
    h = h ^ (h >> 16)
    h = h * 0x85EBCA6B
    h = h ^ (h >> 13)
    h = h * 0xC2B2AE35
    return h ^ (h >> 16)


@triton.jit
def _words_kernel(data_ptr, nbytes, acc_ptr, WORD_STEP: tl.constexpr, N: tl.constexpr, ALIGNED: tl.constexpr):
    """acc += sum of fmix32(w_i + i * WORD_STEP) over this program's N 32-bit words (mod 2^32). ALIGNED
    (data on a 4-byte boundary): whole words are read as words, the zero-padded last one from its bytes."""
    words = tl.program_id(0) * N + tl.arange(0, N)
    if ALIGNED:
        full = nbytes // 4
        w = tl.load(data_ptr.to(tl.pointer_type(tl.uint32)) + words, mask=words < full, other=0)
        b = tl.arange(0, 4)
        tail = tl.load(data_ptr + 4 * full + b, mask=4 * full + b < nbytes, other=0).to(tl.uint32)
        w = tl.where(words == full, tl.sum(tail << (8 * b).to(tl.uint32), axis=0), w)
    else:
        b = tl.arange(0, 4)[None, :]
        at = words[:, None] * 4 + b
        byte = tl.load(data_ptr + at, mask=at < nbytes, other=0).to(tl.uint32)
        w = tl.sum(byte << (8 * b).to(tl.uint32), axis=1)
    mixed = _fmix32(w + words.to(tl.uint32) * WORD_STEP)
    mixed = tl.where(words * 4 < nbytes, mixed, 0)
    tl.atomic_add(acc_ptr, tl.sum(mixed.to(tl.int64), axis=0) & 0xFFFFFFFF)


def words_checksum_bytes(data: torch.Tensor) -> torch.Tensor:
    """wire.words_checksum of a uint8 tensor as its 4 little-endian bytes, on its device (no host sync):
    the low 4 bytes of the int64 sum, which are the sum mod 2^32."""
    acc = torch.zeros(1, dtype=torch.int64, device=data.device)
    nbytes = data.numel()
    if nbytes:
        n = tile(nbytes // 4)
        _words_kernel[(triton.cdiv(nbytes, 4 * n),)](data, nbytes, acc, WORD_STEP=wire.WORD_STEP, N=n,
                                                     ALIGNED=data.data_ptr() % 4 == 0)
    return acc.view(torch.uint8)[:4]


def words_checksum(data: torch.Tensor) -> int:
    """wire.words_checksum of a uint8 tensor, summed on its device."""
    return int.from_bytes(bytes(words_checksum_bytes(data).cpu().numpy()), "little")


class DevicePayload:
    """A payload under construction: header written, sections to fill (as slices), checksum last."""

    def __init__(self, header: Header, lengths: dict[str, int], device: torch.device, checksum: str = "words"):
        head = wire.head_bytes(header, [lengths.get(name, 0) for name in SECTIONS], checksum)
        self.checksum = checksum
        self.offsets: dict[str, tuple[int, int]] = {}
        at = len(head)
        for name in SECTIONS:
            self.offsets[name] = (at, at + lengths.get(name, 0))
            at += lengths.get(name, 0)
        self.data = torch.empty(at + 4, dtype=torch.uint8, device=device)
        self.data[: len(head)].copy_(torch.frombuffer(bytearray(head), dtype=torch.uint8))
        self.checks: list[Callable[[], None]] = []  # run once the payload's last kernels are queued

    def defer(self, check: Callable[[], None]) -> None:
        """Run `check` (which may raise, and may wait for the device) when the payload is finished,
        after its checksum is queued, instead of waiting for the device now."""
        self.checks.append(check)

    def _run_checks(self) -> None:
        checks, self.checks = self.checks, []
        for check in checks:
            check()

    def section(self, name: str) -> torch.Tensor:
        start, stop = self.offsets[name]
        return self.data[start:stop]

    def write(self, name: str, parts: list[bytes | torch.Tensor]) -> None:
        """Copy bytes and uint8 tensors, one after another, into section `name`."""
        start, stop = self.offsets[name]
        for part in parts:
            if isinstance(part, torch.Tensor):
                chunk = part.reshape(-1).view(torch.uint8)
            else:
                chunk = torch.frombuffer(bytearray(part), dtype=torch.uint8) if part else torch.zeros(0, dtype=torch.uint8)
            self.data[start : start + chunk.numel()].copy_(chunk)
            start += chunk.numel()
        if start != stop:
            raise AssertionError(f"section {name} got {start - self.offsets[name][0]} bytes for {stop - self.offsets[name][0]}")

    def finish(self) -> torch.Tensor:
        """The payload as a device tensor, its checksum written."""
        body = self.data[:-4]
        if self.checksum == "words":
            self.data[-4:].copy_(words_checksum_bytes(body))
            self._run_checks()
        else:
            self._run_checks()
            crc_bytes = (wire.xxhash.xxh3_64_intdigest(body.cpu().numpy().tobytes()) & 0xFFFFFFFF).to_bytes(4, "little")
            self.data[-4:].copy_(torch.frombuffer(bytearray(crc_bytes), dtype=torch.uint8))
        return self.data

    def to_bytes(self) -> bytes:
        """The payload on the host (one copy from the device), its checksum computed there."""
        if self.checksum != "xxh3":
            return bytes(self.finish().cpu().numpy())
        self._run_checks()
        raw = self.data[:-4].cpu().numpy().tobytes()
        return raw + (wire.xxhash.xxh3_64_intdigest(raw) & 0xFFFFFFFF).to_bytes(4, "little")


def unpack(payload: torch.Tensor) -> tuple[Header, dict[str, torch.Tensor]]:
    """wire.unpack for a uint8 tensor payload: (header, section slices of it)."""
    header, sections, verify = read(payload)
    verify()
    return header, sections


def read(payload: torch.Tensor) -> tuple[Header, dict[str, torch.Tensor], Callable[[], None]]:
    """(header, section slices, verify): the header is checked now, the checksum when verify() is called
    (it raises CodecError on a mismatch), so a caller can queue work on the sections first and discard
    it if the bytes were corrupt. Only what reads no sizes from the sections may go first."""
    if payload.dtype != torch.uint8 or payload.dim() != 1:
        raise CodecError(f"a device payload is a 1-D uint8 tensor, not {payload.dtype} of {payload.dim()} dims")
    total = payload.numel()
    head = bytes(payload[: min(total, wire.MAX_HEAD)].cpu().numpy())
    header, checksum, at = wire.read_head(memoryview(head), total)
    body = payload[: total - 4]
    if checksum == "words":
        computed = words_checksum_bytes(body)  # queued now, compared in verify()

        def verify() -> None:
            if not torch.equal(computed, payload[total - 4 :]):
                raise CodecError("payload checksum mismatch: the bytes were corrupted in transit")
    else:

        def verify() -> None:
            expected = wire.xxhash.xxh3_64_intdigest(body.cpu().numpy().tobytes()) & 0xFFFFFFFF
            if expected != int.from_bytes(bytes(payload[total - 4 :].cpu().numpy()), "little"):
                raise CodecError("payload checksum mismatch: the bytes were corrupted in transit")
    return header, wire.section_slices(payload, header, at), verify
