"""The stage boundary: an autograd.Function whose forward sends the activation through the forward
codec and whose backward sends the gradient through the backward codec, both recording wire bytes
(= len(payload)), dense fp32 bytes and relative L2 reconstruction error.

With compression off a channel passes the tensor through untouched and counts its raw bytes
(numel * itemsize: what `torch.distributed.send` would move, no header).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import torch

from slimpipe.spec import CompressionConfig, CompressionSpec

# --------------------------------------------------------------------------- identity codec fallback

_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8, torch.bool, torch.int64]
_MAGIC = b"SPR1"


class RawCodec:
    """Raw tensor bytes behind an 8-byte-plus-shape header; what runs when no codec package is there."""

    def encode(self, tensor: torch.Tensor, keys: Any = None) -> bytes:
        t = tensor.detach().contiguous().cpu()
        header = _MAGIC + struct.pack("<BB", _DTYPES.index(t.dtype), t.dim()) + struct.pack(f"<{t.dim()}q", *t.shape)
        return header + t.view(torch.uint8).numpy().tobytes() if t.numel() else header

    @staticmethod
    def decode(payload: bytes) -> torch.Tensor:
        if payload[:4] != _MAGIC or len(payload) < 6:
            raise ValueError("payload is not a raw slimpipe tensor (bad magic or truncated header)")
        code, ndim = struct.unpack_from("<BB", payload, 4)
        shape = struct.unpack_from(f"<{ndim}q", payload, 6)
        dtype = _DTYPES[code]
        body = payload[6 + 8 * ndim :]
        expected = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        if len(body) != expected:
            raise ValueError(f"raw payload body has {len(body)} bytes, its header promises {expected}")
        flat = torch.frombuffer(bytearray(body), dtype=torch.uint8) if body else torch.empty(0, dtype=torch.uint8)
        return flat.view(dtype).reshape(shape)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def reset(self) -> None:
        pass


def make_channel_codec(spec: CompressionSpec, seed: int = 0) -> Any:
    """A codec from worker.codecs for a non-identity spec (one for each end of the channel)."""
    from worker.codecs import make_codec

    return make_codec(spec, seed=seed)


# --------------------------------------------------------------------------- channels


@dataclass
class ChannelStats:
    wire_bytes: int = 0
    dense_bytes: int = 0
    err_sq: float = 0.0
    ref_sq: float = 0.0
    out_sq: float = 0.0
    dot: float = 0.0  # <decoded, dense> summed over transfers: the cosine between what arrived and what was sent
    transfers: list[tuple[int, int]] = field(default_factory=list)  # (micro-batch, wire bytes)

    @property
    def rel_error(self) -> float:
        return (self.err_sq / self.ref_sq) ** 0.5 if self.ref_sq > 0 else 0.0

    @property
    def cosine(self) -> float:
        """Cosine between the decoded and the dense tensors (1 = same direction; dense channels report 1)."""
        return self.dot / (self.ref_sq * self.out_sq) ** 0.5 if self.ref_sq > 0 and self.out_sq > 0 else 1.0


def error_sums(ref: torch.Tensor, got: torch.Tensor) -> torch.Tensor:
    """[|got - ref|^2, |ref|^2, |got|^2, got . ref] of one transfer, as four fp32 dot products (half the
    time of elementwise squares and sums on a 16K-value CPU tensor)."""
    ref, got = ref.reshape(-1), got.reshape(-1)
    err = got - ref
    return torch.stack([torch.dot(err, err), torch.dot(ref, ref), torch.dot(got, got), torch.dot(got, ref)])


class Channel:
    """One direction of one boundary: the sender's codec encodes, the receiver's decodes, bytes are counted.

    `keys` (per-sample ids, one per row) are what `feedback: delta` / `ef` codecs key their caches by.
    """

    def __init__(self, spec: CompressionSpec | None, *, seed: int = 0, measure_error: bool = True):
        self.spec = spec
        self.dense = spec is None or spec.is_identity
        self.sender: Any = None if spec is None or self.dense else make_channel_codec(spec, seed)
        self.receiver: Any = None if spec is None or self.dense else make_channel_codec(spec, seed)
        self.uses_keys = spec is not None and spec.feedback in ("delta", "ef")
        self.measure_error = measure_error
        self._stats = ChannelStats()
        self._error_sums: torch.Tensor | None = None  # (err, ref, out, dot) so far, on the tensors' device

    @property
    def stats(self) -> ChannelStats:
        """What crossed so far. The error sums stay on the tensors' device while sending (on a GPU four
        host syncs a transfer otherwise) and are read back here, once."""
        if self._error_sums is not None:
            s = self._stats
            s.err_sq, s.ref_sq, s.out_sq, s.dot = self._error_sums.tolist()
            self._error_sums = None
        return self._stats

    def record_error(self, ref: torch.Tensor, got: torch.Tensor) -> None:
        """Add one transfer to the reconstruction-error sums, without waiting for the device: the same
        float64 additions, in the same order, as adding each fp32 sum to the stats on the host."""
        if self._error_sums is None:
            s = self._stats
            self._error_sums = torch.tensor([s.err_sq, s.ref_sq, s.out_sq, s.dot], dtype=torch.float64, device=ref.device)
        self._error_sums += error_sums(ref, got).double()

    def send(self, x: torch.Tensor, microbatch: int, keys: torch.Tensor | None = None) -> torch.Tensor:
        dense_bytes = x.numel() * 4
        if self.dense:
            wire = x.numel() * x.element_size()
            out = x
        else:
            on_device = {"device_payload": True} if self.device_payloads(x) else {}
            payload = self.sender.encode(x.detach(), keys if self.uses_keys else None, **on_device)
            wire = payload.numel() if isinstance(payload, torch.Tensor) else len(payload)
            out = self.receiver.decode(payload, device=x.device).to(dtype=x.dtype).reshape(x.shape)
            if self.measure_error:
                self.record_error(x.detach().float(), out.float())
        self.add_transfer(microbatch, wire, dense_bytes)
        return out

    def device_payloads(self, x: torch.Tensor) -> bool:
        """Both ends in this process on the triton backend: the payload stays on x's device (same size,
        the "words" checksum instead of xxh3), with no copy to the host and back."""
        from worker.codecs import chain

        return chain.pick_backend(self.sender.backend, x.device) == "triton"

    def add_transfer(self, microbatch: int, wire: int, dense_bytes: int) -> None:
        """Count one message: its bytes on the wire and the fp32 bytes it stands for."""
        self._stats.wire_bytes += wire
        self._stats.dense_bytes += dense_bytes
        self._stats.transfers.append((microbatch, wire))

    def count_dense(self, x: torch.Tensor, microbatch: int) -> None:
        """What `send` records for a dense channel, without the call (the runner's fast path)."""
        self.add_transfer(microbatch, x.numel() * x.element_size(), x.numel() * 4)

    def count_raw(self, x: torch.Tensor, microbatch: int) -> None:
        """A side tensor (e.g. an attention mask) that crosses uncompressed."""
        wire = x.numel() * x.element_size()
        self.add_transfer(microbatch, wire, wire)

    def reset_stats(self) -> None:
        self._stats, self._error_sums = ChannelStats(), None

    @property
    def cache_bytes(self) -> int:
        """Memory both ends hold for per-sample feedback (delta references, ef residuals)."""
        return sum(codec.cache_bytes for codec in (self.sender, self.receiver) if hasattr(codec, "cache_bytes"))


class Boundary:
    """Boundary i sits between stage i and stage i+1."""

    def __init__(self, index: int, forward: CompressionSpec | None, backward: CompressionSpec | None, seed: int = 0):
        self.index = index
        self.forward = Channel(forward, seed=seed * 1009 + 2 * index)
        self.backward = Channel(backward, seed=seed * 1009 + 2 * index + 1)

    def _codecs(self) -> list[tuple[str, Any]]:
        return [
            (f"{direction}.{end}", codec)
            for direction, ch in (("forward", self.forward), ("backward", self.backward))
            for end, codec in (("sender", ch.sender), ("receiver", ch.receiver))
            if codec is not None
        ]

    def codec_state(self) -> dict[str, Any]:
        return {name: codec.state_dict() for name, codec in self._codecs()}

    def load_codec_state(self, state: dict[str, Any]) -> None:
        for name, codec in self._codecs():
            if name in state:
                codec.load_state_dict(state[name])

    def reset_codecs(self) -> None:
        for _, codec in self._codecs():
            codec.reset()

    def set_train_step(self, step: int | None) -> None:
        """The training step warm-up follows; None (evaluation) applies the full compression."""
        for _, codec in self._codecs():
            codec.train_step = step

    @property
    def cache_bytes(self) -> int:
        return self.forward.cache_bytes + self.backward.cache_bytes

    @property
    def passthrough(self) -> bool:
        """Dense both ways: nothing to encode, so no autograd node is needed; bytes are still counted."""
        return self.forward.dense and self.backward.dense

    def reset_stats(self) -> None:
        self.forward.reset_stats()
        self.backward.reset_stats()


def for_evaluation(spec: CompressionSpec) -> CompressionSpec:
    """The same bits and keep ratio, deterministic: round to nearest and exact top-k. Unbiased coding
    matters for gradients summed over many steps; one evaluation pass is better served by the smaller
    error of nearest rounding (step^2/12 per value, up to step^2/4 stochastic)."""
    return spec.model_copy(update={"rounding": "nearest", "topk_mode": "exact"})


def make_boundaries(config: CompressionConfig, n_stages: int, seed: int = 0, evaluation: bool = False) -> list[Boundary]:
    boundaries = []
    for i in range(n_stages - 1):
        forward, backward = config.for_boundary(i).forward, config.for_boundary(i).backward
        if evaluation:
            forward, backward = for_evaluation(forward), for_evaluation(backward)
        boundaries.append(Boundary(i, forward, backward, seed))
    return boundaries


class BoundaryFunction(torch.autograd.Function):
    """forward: activation through the forward channel; backward: gradient through the backward channel."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, boundary: Boundary, microbatch: int, keys: Any) -> torch.Tensor:  # type: ignore[override]
        ctx.boundary, ctx.microbatch, ctx.keys = boundary, microbatch, keys
        out = boundary.forward.send(x, microbatch, keys)
        return out.view_as(out) if out is x else out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        return ctx.boundary.backward.send(grad.contiguous(), ctx.microbatch, ctx.keys), None, None, None


def send(carry: Any, boundary: Boundary, microbatch: int, keys: torch.Tensor | None = None) -> Any:
    """Cross a boundary: floating tensors through the codecs (with gradient), others counted raw."""
    if isinstance(carry, tuple):
        return tuple(send(t, boundary, microbatch, keys) for t in carry)
    if carry.is_floating_point():
        if torch.is_grad_enabled() and carry.requires_grad:
            if boundary.passthrough:  # the runner counts the gradient's bytes when it passes it back
                boundary.forward.count_dense(carry, microbatch)
                return carry
            return BoundaryFunction.apply(carry, boundary, microbatch, keys)
        return boundary.forward.send(carry, microbatch, keys)
    boundary.forward.count_raw(carry, microbatch)
    return carry
