"""Boundary codecs: `make_codec(spec).encode(tensor) -> bytes` and `decode(bytes) -> tensor`.

One `Codec` per boundary and direction on each end. The sender calls `codec.encode(x, keys)`;
the receiver calls `codec.decode(payload)` on its own Codec built from the same spec. Every
payload is self-describing (see wire.py), so the module-level `decode(payload)` needs nothing
but the bytes -- except payloads of `feedback: delta`, which carry per-sample deltas that only
a receiving Codec holding the references can resolve; `decode` raises CodecError for those.
`ef` keeps its residual on the sender only (per sample when keys are given), so its payloads
decode anywhere. State (`step`, the ef residuals, delta references, the RNG) survives
`state_dict()` / `load_state_dict()`.

Warm-up counts training steps (`codec.train_step`, set by the training loop; see warmup.py);
evaluation codecs never warm up. With delta, dense warm-up payloads set the references. Backends:
"numba" fused CPU kernels, "torch" ops on the tensor's device (CUDA tensors are coded on the GPU),
"triton" fused kernels on the tensor's device (opt-in); "auto" picks numba for CPU tensors and torch
for GPU ones. `encode(..., device_payload=True)` on the triton backend returns the payload as a uint8
tensor on the tensor's device (checksum computed there), which `decode` accepts as it accepts bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from slimpipe.spec import CompressionSpec
from worker.codecs import chain, warmup
from worker.codecs.feedback import ErrorFeedback, SampleCache, check_keys
from worker.codecs.wire import CodecError, Header

__all__ = ["Codec", "CodecError", "Header", "decode", "make_codec"]


class Codec:
    """One direction of one boundary: encodes on the sending end, decodes on the receiving end.

    `train_step` is set by the training loop before each step; warm-up follows it. Left None
    (evaluation, or a codec used on its own) the full compression always applies.
    """

    def __init__(self, spec: CompressionSpec, *, backend: str = "auto", seed: int = 0):
        chain.pick_backend(backend, torch.device("cpu"))  # validate the name (and SLIMPIPE_GPU_CODECS) early
        if backend == "auto":
            chain.gpu_backend()
        self.spec, self.backend, self.seed = spec, backend, seed
        self.train_step: int | None = None
        self.reset()

    def reset(self) -> None:
        self.step = 0  # encode calls
        self.rng = np.random.default_rng(self.seed)
        self.error_feedback = ErrorFeedback()
        self.references = SampleCache(self.spec.sample_cache)  # delta references, or per-sample ef residuals

    @property
    def cache_bytes(self) -> int:
        """Memory held for feedback: per-sample rows plus any tensor-level residual."""
        return self.references.nbytes + self.error_feedback.nbytes

    def encode(self, tensor: torch.Tensor, keys: torch.Tensor | None = None, *, device_payload: bool = False):
        """Payload bytes, or with `device_payload` a uint8 tensor on the tensor's device (triton backend)."""
        now = warmup.spec_at(self.spec, self.train_step)
        spec = now or self.spec
        self.step += 1
        options: dict[str, Any] = {"backend": self.backend, "rng": self.rng, "dense": now is None, "device_payload": device_payload}
        if self.spec.feedback == "ef" and keys is None:  # the same tensor recurs: a tensor-level residual
            sent = self.error_feedback.apply(tensor)
            payload = chain.encode(sent, spec, feedback="ef", dtype=tensor.dtype, **options)
            self.error_feedback.update(sent, self._decode(payload, sent.device)[0])
            return payload
        if self.spec.feedback == "ef":  # per sample: a sample's lost mass rides on its own next visit
            keys = check_keys(keys, tensor, "ef")
            x = tensor.detach().float()
            sent = x + self.references.lookup(keys, x)
            payload = chain.encode(sent, spec, feedback="ef", dtype=tensor.dtype, **options)
            self.references.store(keys, sent - self._decode(payload, x.device)[0])
            return payload
        if self.spec.feedback == "delta":
            keys = check_keys(keys, tensor)
            x = tensor.detach().float()
            if now is None:
                self.references.store(keys, x)
                return chain.encode(x, spec, feedback="delta_base", keys=keys, dtype=tensor.dtype, **options)
            reference = self.references.lookup(keys, x)
            payload = chain.encode(x - reference, spec, feedback="delta", keys=keys, dtype=tensor.dtype, **options)
            self.references.store(keys, reference + self._decode(payload, x.device)[0])
            return payload
        return chain.encode(tensor, spec, **options)

    def _decode(self, payload, device) -> tuple[torch.Tensor, Header, torch.Tensor | None]:
        return chain.decode(payload, device=device, backend=self.backend if self.backend != "auto" else "auto")

    def decode(self, payload, device: torch.device | str | None = None) -> torch.Tensor:
        """The receiving end: like module-level `decode`, and resolves delta payloads."""
        value, header, keys = self._decode(payload, device)
        if header.feedback in ("delta_base", "delta"):
            if keys is None:
                raise CodecError("delta payload carries no sample keys; it is corrupt")
            if header.feedback == "delta":
                value = self.references.lookup(keys, value) + value
            self.references.store(keys, value)
        return value.to(chain.TORCH_DTYPES[header.dtype])

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "rng": self.rng.bit_generator.state,
            "error_feedback": self.error_feedback.state_dict(),
            "references": self.references.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.rng.bit_generator.state = state["rng"]
        self.error_feedback.load_state_dict(state["error_feedback"])
        self.references.load_state_dict(state["references"])


def make_codec(spec: CompressionSpec, *, backend: str = "auto", seed: int = 0) -> Codec:
    """The codec for one boundary direction; validates `spec` if given as a mapping."""
    if not isinstance(spec, CompressionSpec):
        spec = CompressionSpec.model_validate(spec)
    return Codec(spec, backend=backend, seed=seed)


def decode(payload, device: torch.device | str | None = None, *, backend: str = "auto") -> torch.Tensor:
    """Payload bytes (or a device payload tensor) -> tensor (on CPU, or the payload tensor's device,
    unless `device`), in the dtype the encoder was given."""
    value, header, _ = chain.decode(payload, device=device, backend=backend)
    if header.feedback == "delta":
        raise CodecError("payload is a per-sample delta (feedback: delta); decode it with the receiving Codec "
                         "(codec.decode(payload)), which holds the reference values")
    return value.to(chain.TORCH_DTYPES[header.dtype])
