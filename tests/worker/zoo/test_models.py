"""Zoo models: shapes, seed-style default partitions that cover every parameter, balance."""

import pytest
import torch

from slimpipe.spec import DataSpec, ModelSpec, PipelineSpec
from worker import zoo
from worker.pipeline.partition import resolve
from worker.zoo.common import parameter_sizes
from worker.zoo.data import batches
from worker.zoo.vision import MOBILENETV2_STAGES

IMAGE_MODELS = ["tiny_mlp", "tiny_cnn", "mobilenetv2_cifar", "resnet18_cifar"]
SMALL = {"mobilenetv2_cifar": {"width_mult": 0.25}, "resnet18_cifar": {"width": 8}}


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_default_partition_composes_to_the_whole_model(name):
    torch.manual_seed(0)
    built = zoo.MODELS[name].build(SMALL.get(name, {}), num_classes=7, input_shape=(3, 32, 32))
    stages = [built.make_stage(items) for items in resolve(built.module, built.default_stages)]
    built.module.eval()
    x = torch.randn(2, 3, 32, 32)
    out = x
    for stage in stages:
        out = stage(out)
    assert out.shape == (2, 7)
    assert torch.allclose(out, built.module(x), atol=1e-6)


def test_mobilenetv2_keeps_the_seed_names_and_five_stage_split():
    built = zoo.MODELS["mobilenetv2_cifar"].build({}, num_classes=10, input_shape=(3, 32, 32))
    children = [name for name, _ in built.module.named_children()]
    for name in ("conv1", "bn1", "layers", "conv2", "bn2", "linear"):
        assert name in children
    assert len(built.module.layers) == 17
    assert built.default_stages == MOBILENETV2_STAGES and len(MOBILENETV2_STAGES) == 5
    assert sum(p.numel() for p in built.module.parameters()) == 2_296_922  # kuangliu's CIFAR MobileNetV2


def test_balance_splits_blocks_by_parameter_count():
    built = zoo.MODELS["resnet18_cifar"].build({"width": 8}, num_classes=10, input_shape=(3, 32, 32))
    stages = zoo.stage_paths(built, PipelineSpec(balance=3), lambda p: parameter_sizes(built.module, p))
    assert [p for s in stages for p in s] == built.blocks
    sizes = [sum(parameter_sizes(built.module, s)) for s in stages]
    assert max(sizes) < 0.6 * sum(sizes)
    resolve(built.module, stages)


def test_text_model_on_image_data_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="takes image input but dataset 'synthetic_text' gives text"):
        zoo.build(ModelSpec(name="tiny_cnn"), DataSpec(name="synthetic_text"))


TINY_ROBERTA = {
    "config": {
        "model_type": "roberta",
        "vocab_size": 300,
        "hidden_size": 16,
        "num_hidden_layers": 6,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 40,
    }
}


def test_roberta_default_partition_is_the_seed_five_stages():
    built, data = zoo.build(
        ModelSpec(name="hf_classifier", options=TINY_ROBERTA), DataSpec(name="synthetic_text", max_length=16)
    )
    assert built.default_stages == [
        ["roberta.embeddings"],
        ["roberta.encoder.layer[0:2]"],
        ["roberta.encoder.layer[2:4]"],
        ["roberta.encoder.layer[4:6]"],
        ["classifier"],
    ]
    stages = [built.make_stage(items) for items in resolve(built.module, built.default_stages)]
    built.module.eval()
    (ids, mask, types), _ = data.train.batch(torch.arange(4))
    carry = (ids, mask, types)
    for stage in stages[:-1]:
        carry = stage(carry)
        assert isinstance(carry, tuple) and carry[1].dtype == torch.bool and carry[0].shape == (4, 16, 16)
    logits = stages[-1](carry)
    assert torch.allclose(logits, built.module(input_ids=ids, attention_mask=mask).logits, atol=1e-5)


@pytest.mark.slow
def test_minilm_from_the_package_trains_a_few_steps_in_five_stages(capfd):
    from worker import train

    spec = {
        "model": {"name": "minilm"},
        "data": {"name": "synthetic_text", "options": {"n_train": 16, "n_val": 8}, "batch_size": 4, "max_length": 16},
        "pipeline": {"microbatches": 2, "schedule": "gpipe"},
        "compression": {"default": {"forward": {"topk": 0.5}, "backward": {"bits": 8}}},
        "optim": {"name": "adamw", "lr": 5e-5},
        "train": {"max_steps": 2, "eval_every": 2, "threads": 1},
    }
    lines: list[str] = []
    summary = train.run(spec, on_log=lines.append)
    assert summary["n_stages"] == 5 and summary["steps"] == 2
    # The fresh head is said once, in plain words; transformers' progress bar and coloured report are not printed.
    assert [line for line in lines if "checkpoint" in line] == [
        "model minilm: not in the checkpoint, initialised at random: classifier.bias, classifier.weight"
    ]
    printed = capfd.readouterr()
    assert "LOAD REPORT" not in printed.err + printed.out and "Loading weights" not in printed.err + printed.out
    assert summary["stages"][0] == ["bert.embeddings"] and summary["stages"][-1] == [
        "bert.pooler",
        "dropout",
        "classifier",
    ]
    # the 384-wide hidden states cross 4 boundaries both ways; top-k halves them forward
    dense_fwd = 4 * 4 * 16 * 384 * 4 + 4 * 4 * 16  # fp32 activations + 1-byte mask
    assert summary["wire_bytes_fwd_per_step"] < 0.7 * dense_fwd
    assert summary["compression_ratio"] > 2
    assert summary["final_val_acc"] is not None


def test_loading_notes_name_missing_and_unused_checkpoint_keys():
    from worker.zoo.transformers_models import loading_notes

    assert loading_notes({"missing_keys": [], "unexpected_keys": set(), "mismatched_keys": []}) == []
    unused = {f"cls.predictions.k{i}" for i in range(8)}
    assert loading_notes({"missing_keys": ["classifier.weight"], "unexpected_keys": unused}) == [
        "not in the checkpoint, initialised at random: classifier.weight",
        "in the checkpoint but not used by the model: "
        + ", ".join(f"cls.predictions.k{i}" for i in range(6))
        + " and 2 more",
    ]


META_CASES = [
    (ModelSpec(name="tiny_cnn"), DataSpec(name="digits")),
    (ModelSpec(name="mobilenetv2_cifar", options={"width_mult": 0.25}),
     DataSpec(name="synthetic_images", options={"n_train": 8, "n_val": 4})),
    (ModelSpec(name="hf_classifier", options=TINY_ROBERTA), DataSpec(name="synthetic_text", options={"n_train": 8, "n_val": 4})),
    (ModelSpec(name="minilm"), DataSpec(name="synthetic_text", options={"n_train": 8, "n_val": 4})),
]


@pytest.mark.parametrize("model_spec,data_spec", META_CASES, ids=lambda c: getattr(c, "name", None))
def test_a_model_built_on_meta_has_the_same_tensors_and_no_storage(model_spec, data_spec, monkeypatch):
    """What a distributed stage process builds before rank 0 sends its stage: every parameter and buffer
    of the regular build, same names, shapes and dtypes, none holding memory. MiniLM's weights are not
    read (from_pretrained would read them)."""
    from transformers import AutoModelForSequenceClassification

    real, _ = zoo.build(model_spec, data_spec)
    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained",
                        lambda *a, **k: pytest.fail("a meta build read pretrained weights"))
    meta, data = zoo.build(model_spec, data_spec, on_meta=True)

    def tensors(module):
        return [(name, t.shape, t.dtype) for name, t in [*module.named_parameters(), *module.named_buffers()]]

    assert tensors(meta.module) == tensors(real.module)
    assert all(t.is_meta for t in [*meta.module.parameters(), *meta.module.buffers()])
    assert meta.default_stages == real.default_stages
    x, y, _ = next(iter(batches(data.train, 4, shuffle=False)))  # the data is real
    assert not any(t.is_meta for t in (*(x if isinstance(x, tuple) else (x,)), y))


@pytest.mark.parametrize("name", ["tiny_mlp", "tiny_cnn", "mobilenetv2_cifar", "resnet18_cifar", "minilm"])
def test_the_catalog_publishes_the_module_tree_of_a_real_build_without_weights(name, monkeypatch):
    """A worker publishes each model's module tree at start; built on the meta device, the tree is the real
    build's (names do not depend on weights) and MiniLM's checkpoint is not read."""
    from transformers import AutoModelForSequenceClassification

    from slimpipe.modeltree import tree_json
    from worker import catalog

    entry = zoo.MODELS[name]
    tokenizer = entry.tokenizer({}) if entry.tokenizer else None
    shape = catalog.IMAGE_SHAPE if entry.takes == "image" else catalog.TEXT_SHAPE
    real = entry.build({}, num_classes=catalog.NUM_CLASSES, input_shape=shape, tokenizer=tokenizer)
    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained",
                        lambda *a, **k: pytest.fail("the catalog read pretrained weights"))
    published = catalog.model_entry(name)
    assert published == {"tree": tree_json(real.module), "blocks": list(real.blocks), "default_stages": real.default_stages}
