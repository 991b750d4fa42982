"""Split a batch into micro-batches along dim 0 and weight their losses so they sum to the batch mean."""

from __future__ import annotations

from typing import Any

import torch

Batch = torch.Tensor | tuple[torch.Tensor, ...]


def batch_size(x: Batch) -> int:
    return (x[0] if isinstance(x, tuple) else x).shape[0]


def scatter(x: Batch, chunks: int) -> list[Batch]:
    """Like `torch.tensor_split`, for a tensor or a tuple of tensors that share dim 0."""
    n = batch_size(x)
    if chunks > n:
        raise ValueError(f"cannot split a batch of {n} into {chunks} micro-batches; lower pipeline.microbatches")
    if isinstance(x, tuple):
        parts = [torch.tensor_split(t, chunks) for t in x]
        return [tuple(p[i] for p in parts) for i in range(chunks)]
    return list(torch.tensor_split(x, chunks))


def loss_weights(sizes: list[int]) -> list[float]:
    """Micro-batch i's mean loss times size_i/N: the weighted sum equals the full batch's mean loss."""
    total = sum(sizes)
    return [s / total for s in sizes]


def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, tuple):
        return tuple(t.to(device, non_blocking=True) for t in x)
    return x.to(device, non_blocking=True)
