import pytest

from slimpipe.spec import CompressionSpec, SpecError, expand_sweep, parse_spec, set_path

BASE = {"model": {"name": "tiny_mlp"}, "data": {"name": "digits"}, "train": {"max_steps": 10}}


def test_minimal_spec_gets_defaults():
    spec = parse_spec(BASE)
    assert spec.pipeline.schedule == "gpipe"
    assert spec.pipeline.microbatches == 4
    assert spec.compression.default.forward.is_identity
    assert spec.link.bandwidth_mbps == 100.0


@pytest.mark.parametrize(
    "path, value, field, words",
    [
        ("compression.default.forward.bits", 17, "compression.default.forward.bits", "less than or equal to 16"),
        ("compression.default.backward.topk", 0, "compression.default.backward.topk", "greater than 0"),
        ("model.name", "vgg", "model.name", "choose one of"),
        ("pipeline.stages", [["conv1"], ["layers[0:"]], "pipeline.stages", "layers[0:3]"),
        ("pipeline.microbatches", 0, "pipeline.microbatches", "greater than or equal to 1"),
        ("optim.bogus", 1, "optim.bogus", "not a known field"),
        ("pipeline.runner", "mpi", "pipeline.runner", "'inproc' or 'distributed'"),
        ("pipeline.placement", ["a b"], "pipeline.placement", "not a queue name"),
        ("link.jitter_ms", -1, "link.jitter_ms", "greater than or equal to 0"),
    ],
)
def test_invalid_field_names_its_path(path, value, field, words):
    with pytest.raises(SpecError) as info:
        parse_spec(set_path(BASE, path, value))
    assert [e["field"] for e in info.value.errors] == [field]
    assert words in info.value.errors[0]["message"]


def test_placement_needs_the_distributed_runner_and_one_queue_per_stage():
    two = {**BASE, "pipeline": {"stages": [["a"], ["b"]], "placement": ["x", "y"]}}
    with pytest.raises(SpecError) as info:
        parse_spec(two)
    assert [e["field"] for e in info.value.errors] == ["pipeline"]
    assert "set runner: distributed" in info.value.errors[0]["message"]
    spec = parse_spec(set_path(two, "pipeline.runner", "distributed"))
    assert spec.pipeline.placement == ["x", "y"]
    with pytest.raises(SpecError) as info:
        parse_spec(set_path(set_path(two, "pipeline.runner", "distributed"), "pipeline.placement", ["x"]))
    assert "names 1 queues for 2 stages" in info.value.errors[0]["message"]


def test_distributed_refuses_fp16_naming_the_field():
    data = set_path(set_path(BASE, "pipeline.runner", "distributed"), "train.precision", "fp16")
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert [e["field"] for e in info.value.errors] == ["train.precision"]
    assert "use bf16 or fp32" in info.value.errors[0]["message"]


def test_micro_batches_must_fit_in_a_batch():
    """Caught at submission, not as a failed run after the worker has loaded the model and data."""
    with pytest.raises(SpecError) as info:
        parse_spec(set_path(set_path(BASE, "data.batch_size", 2), "pipeline.microbatches", 4))
    assert info.value.errors == [{
        "field": "pipeline.microbatches",
        "message": "4 micro-batches need a batch of at least 4 samples (data.batch_size is 2); "
                   "lower pipeline.microbatches or raise data.batch_size",
    }]  # fmt: skip
    assert parse_spec(set_path(set_path(BASE, "data.batch_size", 4), "pipeline.microbatches", 4)).data.batch_size == 4


def test_train_needs_a_length():
    with pytest.raises(SpecError) as info:
        parse_spec({**BASE, "train": {"eval_every": 5}})
    assert info.value.errors[0]["field"] == "train"
    assert "max_steps" in info.value.errors[0]["message"]


def test_boundary_override_falls_back_to_default():
    spec = parse_spec(
        {
            **BASE,
            "pipeline": {"stages": [["a"], ["b"], ["c"]]},
            "compression": {"default": {"forward": {"bits": 8}}, "boundaries": {"1": {"backward": {"topk": 0.1}}}},
        }
    )
    assert spec.compression.for_boundary(0).backward.topk is None
    assert spec.compression.for_boundary(1).forward.bits == 8
    assert spec.compression.for_boundary(1).backward.topk == 0.1


def test_boundary_override_out_of_range():
    with pytest.raises(SpecError) as info:
        parse_spec({**BASE, "pipeline": {"stages": [["a"], ["b"]]}, "compression": {"boundaries": {"3": {}}}})
    assert [e["field"] for e in info.value.errors] == ["compression.boundaries.3"]
    assert "boundaries 0..0" in info.value.errors[0]["message"]


def test_sweep_grid_expands_every_combination():
    points = expand_sweep(BASE, {"compression.default.backward.topk": [1, 0.5], "compression.default.forward.bits": [4, 8, 16]})
    assert len(points) == 6
    assert points[0][0] == {"compression.default.backward.topk": 1, "compression.default.forward.bits": 4}
    assert points[-1][1].compression.default.forward.bits == 16
    assert points[-1][1].compression.default.backward.topk == 0.5


def test_sweep_with_bad_value_names_the_value():
    with pytest.raises(SpecError) as info:
        expand_sweep(BASE, {"compression.default.backward.topk": [0.5, 2]})
    assert "sweep value" in str(info.value) and "topk" in str(info.value)


def test_identity_flags():
    assert CompressionSpec().is_identity
    assert not CompressionSpec(bits=8).is_identity
    assert not CompressionSpec(topk=0.5).is_identity


def test_a_preset_fills_the_default_and_round_trips():
    from slimpipe.presets import COMPRESSION_PRESETS
    from slimpipe.spec import dump_spec

    spec = parse_spec({**BASE, "compression": {"preset": "aggressive", "boundaries": {0: {"forward": {"bits": 8}}}}})
    assert spec.compression.default.forward == CompressionSpec(**COMPRESSION_PRESETS["aggressive"]["forward"])
    assert spec.compression.for_boundary(0).forward.bits == 8
    assert parse_spec(dump_spec(spec)) == spec  # the dumped default equals the preset's, so it is accepted


def test_default_fields_given_with_a_preset_replace_the_presets_and_a_bad_name_is_refused():
    spec = parse_spec({**BASE, "compression": {"preset": "extreme", "default": {"backward": {"rate": 1.5}}}})
    assert spec.compression.default.backward.rate == 1.5
    assert spec.compression.default.backward.entropy == "ans"  # the rest of the preset's backward stays
    assert spec.compression.default.forward.rate == 1.9
    with pytest.raises(SpecError, match="rate picks the step itself; set step_std: null or rate: null"):
        parse_spec({**BASE, "compression": {"preset": "extreme", "default": {"backward": {"step_std": 1.0}}}})
    spec = parse_spec(
        {**BASE, "compression": {"preset": "extreme", "default": {"backward": {"step_std": 1.0, "rate": None}}}}
    )
    assert spec.compression.default.backward.step_std == 1.0 and spec.compression.default.backward.rate is None
    with pytest.raises(SpecError, match="compression.preset"):
        parse_spec({**BASE, "compression": {"preset": "fastest"}})


def test_every_preset_is_a_valid_compression():
    from slimpipe.presets import COMPRESSION_PRESET_NOTES, COMPRESSION_PRESETS

    assert list(COMPRESSION_PRESETS) == list(COMPRESSION_PRESET_NOTES) == ["balanced", "aggressive", "extreme"]
    for preset in COMPRESSION_PRESETS:
        assert not parse_spec({**BASE, "compression": {"preset": preset}}).compression.default.forward.is_identity


def test_step_std_without_entropy_names_the_field_and_the_fix():
    with pytest.raises(SpecError, match=r"step_std.*entropy: ans"):
        parse_spec({**BASE, "compression": {"default": {"forward": {"bits": 8, "step_std": 0.7}}}})
    spec = parse_spec({**BASE, "compression": {"default": {"forward": {"bits": 8, "step_std": 0.7, "entropy": "ans"}}}})
    assert spec.compression.default.forward.step_std == 0.7
