"""Tensors the codec tests share: small, seeded, and shaped like boundary activations."""

import pytest
import torch


def heavy_tailed(*shape: int) -> torch.Tensor:
    return torch.distributions.StudentT(2.0).sample(shape)


def transformer_like(rows: int, width: int) -> torch.Tensor:
    """Residual-stream activations: Gaussian with a few outlier channels 20-50x larger."""
    x = torch.randn(rows, width)
    x[:, :: max(1, width // 4)] *= 30.0
    return x


@pytest.fixture
def activations() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(32, 257)
