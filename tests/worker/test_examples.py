"""Every example spec validates; the offline ones start training; the seed's sweep expands to its 5 runs."""

from pathlib import Path

import pytest
import yaml

from slimpipe.spec import expand_sweep, load_spec, load_spec_text
from worker import train

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SPECS = sorted(p for p in EXAMPLES.glob("*.yaml") if not p.name.endswith(".sweep.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_example_spec_validates(path):
    load_spec(path)


def test_seed_examples_keep_the_seed_partitions():
    assert load_spec(EXAMPLES / "mobilenetv2_cifar10_gpipe.yaml").pipeline.stages == [
        ["conv1", "bn1", "act1"],
        ["layers[0:3]"],
        ["layers[3:7]"],
        ["layers[7:]", "conv2"],
        ["bn2", "act2", "pool", "flatten", "linear"],
    ]
    rte = load_spec(EXAMPLES / "roberta_rte.yaml")
    assert rte.n_stages == 5 and rte.pipeline.microbatches == 4
    sweep = yaml.safe_load((EXAMPLES / "roberta_rte.sweep.yaml").read_text())
    points = expand_sweep(load_spec_text((EXAMPLES / "roberta_rte.yaml").read_text()), sweep)
    assert [p.compression.default.backward.topk for _, p in points] == [1.0, 0.8, 0.6, 0.5, 0.4]


def test_offline_digits_example_trains(tmp_path):
    data = load_spec_text((EXAMPLES / "digits_cnn_topk.yaml").read_text())
    data["train"] = {**data["train"], "epochs": None, "max_steps": 3, "eval_every": 3}
    summary = train.run(data, out_dir=tmp_path)
    assert summary["steps"] == 3 and summary["n_stages"] == 3
    assert 1.7 < summary["compression_ratio"] < 2.0  # top-k 0.5 both ways: half the values plus their index set
