"""Sender/receiver state for error feedback (ef) and per-sample delta coding (delta, AQ-SGD)."""

from __future__ import annotations

import torch

from worker.codecs.wire import CodecError


class ErrorFeedback:
    """The sender keeps what compression lost and adds it to the next tensor of the same shape."""

    def __init__(self) -> None:
        self.residual: torch.Tensor | None = None

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float()
        if self.residual is None or self.residual.shape != x.shape or self.residual.device != x.device:
            return x  # first call, or a differently shaped micro-batch: start afresh
        return x + self.residual

    def update(self, sent: torch.Tensor, decoded: torch.Tensor) -> None:
        self.residual = sent - decoded.to(sent.device)

    def state_dict(self) -> dict:
        return {"residual": None if self.residual is None else self.residual.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.residual = state.get("residual")

    def reset(self) -> None:
        self.residual = None


def check_keys(keys: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if keys is None:
        raise CodecError("feedback='delta' needs keys: a 1-D int64 tensor of per-sample ids, one per row of dim 0")
    keys = torch.as_tensor(keys)
    if keys.dim() != 1 or keys.dtype not in (torch.int64, torch.int32) or x.dim() == 0 or keys.numel() != x.shape[0]:
        raise CodecError(f"keys must be 1-D integers with one id per row ({x.shape[0] if x.dim() else 0} rows), "
                         f"got shape {tuple(keys.shape)} and dtype {keys.dtype}")
    if keys.unique().numel() != keys.numel():
        raise CodecError("keys must be unique within one tensor")
    return keys.to(torch.int64)


class DeltaReference:
    """Last reconstructed value per sample id; both ends update it with the same decoded deltas."""

    def __init__(self) -> None:
        self.refs: dict[int, torch.Tensor] = {}

    def lookup(self, keys: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """References for these keys (zeros for unseen ids or a changed sample shape), fp32 like `like`."""
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
            self.refs[key] = row.clone()

    def state_dict(self) -> dict:
        keys = sorted(self.refs)
        return {"keys": keys, "values": [self.refs[k].cpu() for k in keys]}

    def load_state_dict(self, state: dict) -> None:
        self.refs = dict(zip(state.get("keys", []), state.get("values", []), strict=True))

    def reset(self) -> None:
        self.refs = {}
