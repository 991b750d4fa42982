"""The correctness anchor: compression off, no BatchNorm -> any partition, any micro-batch count and any
schedule give the same losses and parameters as the unsplit model trained on the whole batch.

Tolerance: float64 models agree to 1e-10 (only summation order differs); the fp32 transformer to 2e-5.
"""

import copy

import pytest
import torch

from slimpipe.spec import CompressionConfig
from worker.pipeline.boundary import make_boundaries
from worker.pipeline.partition import resolve
from worker.pipeline.runner import InprocRunner
from worker.zoo.transformers_models import hf_classifier
from worker.zoo.vision import tiny_cnn, tiny_mlp

STEPS = 3


def reference_run(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for x, y in batches:
        opt.zero_grad()
        logits = model(x) if not isinstance(x, tuple) else model(input_ids=x[0], attention_mask=x[1]).logits
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def pipeline_run(zoo_model, stages, schedule, m, batches):
    parts = [zoo_model.make_stage(items) for items in resolve(zoo_model.module, stages)]
    runner = InprocRunner(parts, make_boundaries(CompressionConfig(), len(parts)), schedule=schedule, microbatches=m)
    opt = torch.optim.SGD(zoo_model.module.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for x, y in batches:
        opt.zero_grad()
        losses.append(runner.train_step(x, y).loss)
        opt.step()
    return losses


def assert_same(ref_model, ref_losses, model, losses, tol):
    assert losses == pytest.approx(ref_losses, rel=tol, abs=tol)
    for (name, p_ref), (_, p) in zip(ref_model.named_parameters(), model.named_parameters(), strict=True):
        assert torch.allclose(p, p_ref, rtol=tol, atol=tol), name


def image_batches(shape, n=10):
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, 5, (n,), generator=g))
        for _ in range(STEPS)
    ]


MLP_PARTITIONS = [
    [["flatten", "fc1", "act1", "fc2", "act2", "head"]],
    [["flatten", "fc1"], ["act1", "fc2", "act2"], ["head"]],
    [["flatten"], ["fc1"], ["act1"], ["fc2"], ["act2"], ["head"]],
]


@pytest.mark.parametrize("schedule", ["sequential", "gpipe", "1f1b"])
@pytest.mark.parametrize("stages", MLP_PARTITIONS, ids=["1stage", "3stages", "6stages"])
@pytest.mark.parametrize("m", [1, 3, 4])
def test_mlp_pipeline_matches_the_unsplit_model(schedule, stages, m):
    torch.manual_seed(0)
    zoo_model = tiny_mlp({"hidden": 16}, num_classes=5, input_shape=(1, 4, 4))
    zoo_model.module.double()
    ref = copy.deepcopy(zoo_model.module)
    batches = image_batches((1, 4, 4))
    ref_losses = reference_run(ref, batches)
    losses = pipeline_run(zoo_model, stages, schedule, m, batches)
    assert_same(ref, ref_losses, zoo_model.module, losses, 1e-10)


@pytest.mark.parametrize("schedule", ["sequential", "gpipe", "1f1b"])
@pytest.mark.parametrize(
    "stages",
    [
        [["conv1", "bn1", "act1"], ["conv2", "bn2", "act2", "pool"], ["conv3", "act3", "flatten", "head"]],
        [["conv1", "bn1", "act1", "conv2"], ["bn2", "act2", "pool", "conv3", "act3", "flatten", "head"]],
    ],
    ids=["default3", "uneven2"],
)
def test_cnn_pipeline_matches_the_unsplit_model(schedule, stages):
    torch.manual_seed(0)
    zoo_model = tiny_cnn({"width": 4}, num_classes=5, input_shape=(1, 8, 8))
    zoo_model.module.double()
    ref = copy.deepcopy(zoo_model.module)
    batches = image_batches((1, 8, 8), n=8)
    ref_losses = reference_run(ref, batches)
    losses = pipeline_run(zoo_model, stages, schedule, 4, batches)
    assert_same(ref, ref_losses, zoo_model.module, losses, 1e-10)


TINY_BERT = {
    "config": {
        "model_type": "bert",
        "vocab_size": 200,
        "hidden_size": 16,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 32,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
}


@pytest.mark.parametrize("schedule", ["sequential", "gpipe", "1f1b"])
def test_transformer_stages_carry_the_mask_and_match_the_hf_model(schedule):
    torch.manual_seed(0)
    zoo_model = hf_classifier(TINY_BERT, num_classes=3)
    ref = copy.deepcopy(zoo_model.module)
    g = torch.Generator().manual_seed(2)
    batches = []
    for _ in range(STEPS):
        ids = torch.randint(5, 200, (8, 12), generator=g)
        lengths = torch.randint(4, 13, (8,), generator=g)
        mask = (torch.arange(12)[None] < lengths[:, None]).long()
        batches.append(((ids * mask, mask, torch.zeros_like(ids)), torch.randint(0, 3, (8,), generator=g)))
    ref_losses = reference_run(ref, batches)
    stages = [
        ["bert.embeddings"],
        ["bert.encoder.layer[0:1]"],
        ["bert.encoder.layer[1:]"],
        ["bert.pooler", "dropout", "classifier"],
    ]
    losses = pipeline_run(zoo_model, stages, schedule, 4, batches)
    assert_same(ref, ref_losses, zoo_model.module, losses, 2e-5)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_a_loss_scaler_scales_every_stages_gradients_as_in_the_unsplit_model(schedule):
    """fp16's path: the last stage's backward starts from the scaled loss, and every stage's gradients
    come out multiplied by the scale, as `scaler.scale(loss).backward()` gives on the whole model."""
    torch.manual_seed(0)
    zoo_model = tiny_mlp({"hidden": 16}, num_classes=5, input_shape=(1, 4, 4))
    zoo_model.module.double()
    ref = copy.deepcopy(zoo_model.module)
    x, y = image_batches((1, 4, 4))[0]
    scale = 1024.0
    (torch.nn.functional.cross_entropy(ref(x), y) * scale).backward()
    parts = [zoo_model.make_stage(items) for items in resolve(zoo_model.module, MLP_PARTITIONS[1])]
    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    runner = InprocRunner(parts, make_boundaries(CompressionConfig(), 3), schedule=schedule, microbatches=3, scaler=scaler)
    runner.train_step(x, y)
    for (name, p_ref), (_, p) in zip(ref.named_parameters(), zoo_model.module.named_parameters(), strict=True):
        assert p.grad is not None and torch.allclose(p.grad, p_ref.grad, rtol=1e-10, atol=1e-10), name
