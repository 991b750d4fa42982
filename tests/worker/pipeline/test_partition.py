"""Partition paths: parsing, resolving against a model with clear errors, balancing by size."""

import pytest
from torch import nn

from worker.pipeline.partition import (
    PartitionError,
    PathPart,
    balance_by_size,
    balanced_stages,
    parse_path,
    resolve,
    resolve_path,
)
from worker.zoo.vision import MOBILENETV2_STAGES, mobilenetv2_cifar


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("conv1", [PathPart("conv1")]),
        ("layers[0:3]", [PathPart("layers", slice(0, 3))]),
        ("layers[7:]", [PathPart("layers", slice(7, None))]),
        ("layers[:-1]", [PathPart("layers", slice(None, -1))]),
        ("layers[-1]", [PathPart("layers", -1)]),
        ("roberta.encoder.layer[3:7]", [PathPart("roberta"), PathPart("encoder"), PathPart("layer", slice(3, 7))]),
    ],
)
def test_parse_path_reads_python_like_slices(path, parts):
    assert parse_path(path) == parts
    assert ".".join(str(p) for p in parts) == path


@pytest.mark.parametrize("bad", ["", "layers[", "layers[a:b]", "1conv", "a..b", "layers[]"])
def test_parse_path_rejects_non_paths_with_an_example(bad):
    with pytest.raises(PartitionError, match="write e.g. 'layers\\[0:3\\]'"):
        parse_path(bad)


@pytest.fixture(scope="module")
def mobilenet():
    return mobilenetv2_cifar({"width_mult": 0.25}, num_classes=10, input_shape=(3, 32, 32)).module


def test_seed_partition_resolves_to_the_seed_modules(mobilenet):
    stages = resolve(mobilenet, MOBILENETV2_STAGES)
    assert [[p for p, _ in s] for s in stages][:3] == [
        ["conv1", "bn1", "act1"],
        ["layers.0", "layers.1", "layers.2"],
        ["layers.3", "layers.4", "layers.5", "layers.6"],
    ]
    assert [p for p, _ in stages[3]] == [f"layers.{i}" for i in range(7, 17)] + ["conv2"]
    assert stages[1][0][1] is mobilenet.layers[0]


def test_missing_module_names_it_and_lists_valid_children(mobilenet):
    with pytest.raises(PartitionError) as err:
        resolve_path(mobilenet, "conv3")
    assert "no module 'conv3' under the model root" in str(err.value)
    assert "valid children: conv1, bn1, act1, layers, conv2, bn2, act2, pool, flatten, linear" in str(err.value)
    with pytest.raises(PartitionError, match="no module 'conv9' under layers\\[0\\]; valid children: conv1, bn1"):
        resolve_path(mobilenet, "layers[0].conv9")


def test_out_of_range_and_empty_slices_say_how_many_entries_exist(mobilenet):
    with pytest.raises(PartitionError, match="layers has 17 entries \\(0..16\\); index 20 is out of range"):
        resolve_path(mobilenet, "layers[20]")
    with pytest.raises(PartitionError, match="selects none of its 17 entries"):
        resolve_path(mobilenet, "layers[30:]")


def test_a_module_in_two_stages_is_refused(mobilenet):
    stages = [
        ["conv1", "bn1", "act1", "layers[0:3]"],
        ["layers[2:]", "conv2", "bn2", "act2", "pool", "flatten", "linear"],
    ]
    with pytest.raises(PartitionError, match="module 'layers.2' is in stage 0 and stage 1"):
        resolve(mobilenet, stages)


def test_parameters_left_out_of_every_stage_are_named(mobilenet):
    with pytest.raises(PartitionError, match="modules bn2, linear hold parameters but are in no stage"):
        resolve(mobilenet, [["conv1", "bn1", "act1", "layers"], ["conv2"]])


def test_parameterless_modules_may_be_left_out():
    model = nn.Sequential()
    model.add_module("fc", nn.Linear(2, 2))
    model.add_module("act", nn.ReLU())
    assert [p for p, _ in resolve(model, [["fc"]])[0]] == ["fc"]


def test_balance_by_size_minimises_the_largest_stage():
    assert balance_by_size([1, 1, 1, 1, 4], 3) == [2, 2, 1]
    assert balance_by_size([5, 1, 1, 1, 1, 1], 2) == [1, 5]
    assert balance_by_size([1] * 12, 4) == [3, 3, 3, 3]
    assert balanced_stages(["a", "b", "c", "d"], [1, 1, 1, 3], 2) == [["a", "b", "c"], ["d"]]


def test_balance_refuses_more_stages_than_blocks():
    with pytest.raises(PartitionError, match="cannot split 3 blocks into 4 stages; choose balance between 1 and 3"):
        balance_by_size([1, 1, 1], 4)
