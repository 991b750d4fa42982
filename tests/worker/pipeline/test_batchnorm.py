"""Deferred BatchNorm: micro-batch normalisation, one running-statistics update per mini-batch."""

import copy

import torch
from torch import nn

from slimpipe.spec import CompressionConfig
from worker.pipeline.batchnorm import DeferredBatchNorm, convert_deferred_batch_norm
from worker.pipeline.boundary import make_boundaries
from worker.pipeline.runner import InprocRunner
from worker.zoo.common import Stage


def test_running_stats_match_one_full_batch_update():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, 4))
    full = copy.deepcopy(model)
    convert_deferred_batch_norm(model, chunks=4)
    assert isinstance(model[1], DeferredBatchNorm)
    stages = [Stage([("0", model[0]), ("1", model[1])]), Stage([(str(i), model[i]) for i in range(2, 5)])]
    runner = InprocRunner(stages, make_boundaries(CompressionConfig(), 2), schedule="gpipe", microbatches=4)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    runner.train_step(x, y)
    full(x)  # one BatchNorm update from the whole batch
    assert torch.allclose(model[1].running_mean, full[1].running_mean, atol=1e-6)
    assert torch.allclose(model[1].running_var, full[1].running_var, atol=1e-5)
    assert int(model[1].num_batches_tracked) == 1


def test_plain_batchnorm_updates_once_per_microbatch_which_deferred_avoids():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3)
    for chunk in torch.randn(8, 3).chunk(4):
        bn(chunk)
    assert int(bn.num_batches_tracked) == 4


def test_conversion_keeps_state_and_eval_uses_running_stats():
    bn = nn.BatchNorm1d(3)
    bn.running_mean.fill_(2.0)
    model = convert_deferred_batch_norm(nn.Sequential(bn), chunks=2).eval()
    assert torch.equal(model[0].running_mean, torch.full((3,), 2.0))
    x = torch.randn(4, 3)
    assert torch.allclose(model(x), (x - 2.0) / (1 + 1e-5) ** 0.5, atol=1e-5)
