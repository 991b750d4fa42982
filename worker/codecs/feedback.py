"""Per-sample codec state: a bounded cache of one row per data index, for delta coding (AQ-SGD) and
per-sample error feedback; and the tensor-level residual for error feedback where the same tensor
recurs (no keys).

A pipeline boundary sees different samples every step, so a residual carried from one micro-batch
to the next adds one batch's lost mass to other samples' activations; keyed by the data index the
carried value meets the same sample again, as AQ-SGD does.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from worker.codecs.wire import CodecError


class ErrorFeedback:
    """The sender keeps what compression lost and adds it to the next tensor of the same shape (no keys)."""

    def __init__(self) -> None:
        self.residual: torch.Tensor | None = None

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float()
        if self.residual is None or self.residual.shape != x.shape or self.residual.device != x.device:
            return x  # first call, or a differently shaped micro-batch: start afresh
        return x + self.residual

    def update(self, sent: torch.Tensor, decoded: torch.Tensor) -> None:
        self.residual = sent - decoded.to(sent.device)

    @property
    def nbytes(self) -> int:
        return 0 if self.residual is None else self.residual.numel() * self.residual.element_size()

    def state_dict(self) -> dict:
        return {"residual": None if self.residual is None else self.residual.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.residual = state.get("residual")

    def reset(self) -> None:
        self.residual = None


def check_keys(keys: torch.Tensor | None, x: torch.Tensor, feedback: str = "delta") -> torch.Tensor:
    if keys is None:
        raise CodecError(f"feedback='{feedback}' needs keys: a 1-D int64 tensor of per-sample ids, one per row of dim 0")
    keys = torch.as_tensor(keys)
    if keys.dim() != 1 or keys.dtype not in (torch.int64, torch.int32) or x.dim() == 0 or keys.numel() != x.shape[0]:
        raise CodecError(f"keys must be 1-D integers with one id per row ({x.shape[0] if x.dim() else 0} rows), "
                         f"got shape {tuple(keys.shape)} and dtype {keys.dtype}")
    if keys.unique().numel() != keys.numel():
        raise CodecError("keys must be unique within one tensor")
    return keys.to(torch.int64)


class SampleCache:
    """One fp32 row per sample id, at most `capacity` of them; storing past that evicts the least recently stored.

    Both ends of a channel store the same keys in the same order, so they evict the same samples.
    An evicted or unseen sample reads as zeros: its next delta is the full value.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError(f"sample_cache must hold at least 1 sample, not {capacity}")
        self.capacity = capacity
        self.reset()

    def reset(self) -> None:
        self.refs: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.nbytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.refs)

    def lookup(self, keys: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Rows for these keys (zeros for unseen ids or a changed sample shape), fp32 like `like`."""
        rows = []
        for key in keys.tolist():  # one step per sample, not per element
            ref = self.refs.get(key)
            if ref is not None and ref.shape == like.shape[1:]:
                rows.append(ref.to(like.device))
            else:
                rows.append(torch.zeros(like.shape[1:], device=like.device))
        return torch.stack(rows) if rows else torch.zeros_like(like, dtype=torch.float32)

    def store(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        for key, row in zip(keys.tolist(), values.detach().float(), strict=True):
            old = self.refs.pop(key, None)
            if old is not None:
                self.nbytes -= old.numel() * old.element_size()
            self.refs[key] = row.clone()
            self.nbytes += row.numel() * row.element_size()
        while len(self.refs) > self.capacity:
            _, old = self.refs.popitem(last=False)
            self.nbytes -= old.numel() * old.element_size()
            self.evicted += 1

    def state_dict(self) -> dict:
        keys = list(self.refs)  # in recency order, so a resumed cache evicts the same samples
        return {"keys": keys, "values": [self.refs[k].cpu() for k in keys], "evicted": self.evicted}

    def load_state_dict(self, state: dict) -> None:
        self.reset()
        for key, row in zip(state.get("keys", []), state.get("values", []), strict=True):
            self.refs[int(key)] = row
            self.nbytes += row.numel() * row.element_size()
        self.evicted = int(state.get("evicted", 0))


DeltaReference = SampleCache  # the name the delta codec's receivers were written against
