"""Deferred BatchNorm (torchgpipe's idea): normalise each micro-batch with its own statistics, but
update the running statistics once per mini-batch, from all its micro-batches together."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class DeferredBatchNorm(_BatchNorm):
    def __init__(self, *args, chunks: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.chunks = chunks
        # a mini-batch's sums, made on the input's device at the first micro-batch (not buffers: never saved,
        # and a module built on the meta device has no storage to move)
        self.sum: torch.Tensor | None = None
        self.sum_squares: torch.Tensor | None = None
        self.counted = 0
        self.tracked = 0

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() <= 1:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]
        with torch.no_grad():
            xf = x.detach().float()
            if self.sum is None or self.sum_squares is None or self.sum.device != x.device:
                self.sum = torch.zeros(self.num_features, device=x.device)
                self.sum_squares = torch.zeros(self.num_features, device=x.device)
            self.sum += xf.sum(dims)
            self.sum_squares += (xf**2).sum(dims)
            self.counted += x.numel() // x.size(1)
            self.tracked += 1
            if self.tracked == self.chunks:
                self._commit()
        return nn.functional.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

    def _commit(self) -> None:
        assert self.running_mean is not None and self.running_var is not None and self.num_batches_tracked is not None
        assert self.sum is not None and self.sum_squares is not None
        mean = self.sum / self.counted
        var = self.sum_squares / self.counted - mean**2
        var = var * self.counted / max(1, self.counted - 1)  # unbiased, as nn.BatchNorm tracks it
        momentum = 0.1 if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(var.to(self.running_var.dtype), alpha=momentum)
        self.num_batches_tracked.add_(1)
        self.sum.zero_()
        self.sum_squares.zero_()
        self.counted = self.tracked = 0


def convert_deferred_batch_norm(module: nn.Module, chunks: int) -> nn.Module:
    """Replace every BatchNorm in `module` (in place) by a DeferredBatchNorm with the same state."""
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(child, DeferredBatchNorm):
            deferred = DeferredBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats, chunks=chunks
            )
            deferred.load_state_dict(child.state_dict(), strict=False)
            deferred.to(next(iter(child.buffers())).device)
            setattr(module, name, deferred)
        else:
            convert_deferred_batch_norm(child, chunks)
    return module
