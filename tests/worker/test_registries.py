"""The zoo registers exactly the names the spec allows, and every schedule the spec names exists."""

import typing

from slimpipe import names
from slimpipe.spec import PipelineSpec
from worker import zoo
from worker.pipeline.schedule import SCHEDULES


def test_model_registry_matches_the_spec_names():
    assert tuple(zoo.MODELS) == names.MODELS


def test_dataset_registry_matches_the_spec_names():
    assert tuple(zoo.DATASETS) == names.DATASETS


def test_schedule_registry_matches_the_spec_literal():
    allowed = typing.get_args(PipelineSpec.model_fields["schedule"].annotation)
    assert tuple(SCHEDULES) == allowed
