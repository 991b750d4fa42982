"""The model and data zoo: name -> builder registries (names agree with slimpipe.names)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from slimpipe.spec import DataSpec, ModelSpec, PipelineSpec
from worker.zoo import images, text, transformers_models, vision
from worker.zoo.common import ZooModel
from worker.zoo.data import DataBundle


@dataclass(frozen=True)
class ModelEntry:
    build: Callable[..., ZooModel]
    takes: str  # "image" | "text"
    tokenizer: Callable[[dict[str, Any]], Any] | None = None


MODELS: dict[str, ModelEntry] = {
    "tiny_mlp": ModelEntry(vision.tiny_mlp, "image"),
    "tiny_cnn": ModelEntry(vision.tiny_cnn, "image"),
    "mobilenetv2_cifar": ModelEntry(vision.mobilenetv2_cifar, "image"),
    "resnet18_cifar": ModelEntry(vision.resnet18_cifar, "image"),
    "hf_classifier": ModelEntry(transformers_models.hf_classifier, "text", transformers_models.hf_tokenizer),
    "minilm": ModelEntry(transformers_models.minilm, "text", transformers_models.minilm_tokenizer),
}

DATASETS: dict[str, Callable[..., DataBundle]] = {
    "synthetic_images": images.synthetic_images,
    "synthetic_text": text.synthetic_text,
    "digits": images.digits,
    "mnist": images.mnist,
    "cifar10": images.cifar10,
    "image_folder": images.image_folder,
    "glue": text.glue,
    "text_file": text.text_file,
}


TEXT_DATASETS = ("synthetic_text", "glue", "text_file")


def build(model_spec: ModelSpec, data_spec: DataSpec, on_meta: bool = False) -> tuple[ZooModel, DataBundle]:
    """Tokenizer (from the model), then data, then the model sized to the data.

    `on_meta`: the model's parameters and buffers are built on the meta device (shapes, no storage, no
    pretrained weights read): a distributed stage process, which gets its own stage's weights from rank 0."""
    entry = MODELS[model_spec.name]
    kind = "text" if data_spec.name in TEXT_DATASETS else "image"
    if kind != entry.takes:
        raise ValueError(
            f"model {model_spec.name!r} takes {entry.takes} input but dataset {data_spec.name!r} gives {kind}; "
            "pick a matching model or dataset"
        )
    tokenizer = entry.tokenizer(model_spec.options) if entry.tokenizer else None
    data = DATASETS[data_spec.name](data_spec.options, tokenizer=tokenizer, max_length=data_spec.max_length)
    if data.kind != entry.takes:  # pragma: no cover - a dataset registered with the wrong kind
        raise ValueError(
            f"model {model_spec.name!r} takes {entry.takes} input but dataset {data_spec.name!r} gives {data.kind}; "
            "pick a matching model or dataset"
        )
    num_classes = int(model_spec.options.get("num_labels", data.num_classes))
    with torch.device("meta") if on_meta else contextlib.nullcontext():
        model = entry.build(model_spec.options, num_classes=num_classes, input_shape=data.input_shape,
                            tokenizer=tokenizer, on_meta=on_meta)
    return model, data


def stage_paths(
    model: ZooModel, pipeline: PipelineSpec, module_sizes: Callable[[list[str]], list[float]]
) -> list[list[str]]:
    """The partition: the spec's stages, a balanced split of the model's blocks, or the model's default."""
    from worker.pipeline.partition import balanced_stages

    if pipeline.stages is not None:
        return [list(stage) for stage in pipeline.stages]
    if pipeline.balance is not None:
        return balanced_stages(model.blocks, module_sizes(model.blocks), pipeline.balance)
    return [list(stage) for stage in model.default_stages]
