"""A run's checkpoint files, read from outside the training loop: the step they hold, and the whole model."""

from __future__ import annotations

from pathlib import Path

import torch

from slimpipe.spec import ExperimentSpec, parse_spec
from worker.train import CHECKPOINT, Experiment


def model_state(spec: ExperimentSpec | dict, folder: Path) -> dict[str, torch.Tensor]:
    """The whole model's state dict (its own parameter names) from the checkpoint files in `folder`:
    `checkpoint.pt` of an in-process run, or every `checkpoint.stageK.pt` of a distributed one, e.g. as
    `slimpipe download RUN checkpoint` unpacks them. `spec` is the run's (`slimpipe download RUN spec`)."""
    spec = parse_spec(spec)
    state = torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=True)
    if "model" in state:
        return state["model"]
    exp = Experiment(spec, device=torch.device("cpu"), on_meta=True)  # shapes only: the files hold every weight
    if len(exp.stages) != state.get("stages"):
        raise ValueError(f"{folder / CHECKPOINT} is of {state.get('stages')} stages; the spec cuts {len(exp.stages)}")
    for k, stage in enumerate(exp.stages):
        stage_state = torch.load(folder / f"checkpoint.stage{k}.pt", map_location="cpu", weights_only=True)
        if stage_state["step"] != state["step"]:
            raise ValueError(f"checkpoint.stage{k}.pt is of step {stage_state['step']}, checkpoint.pt of {state['step']}")
        stage.load_state_dict(stage_state["stage"], assign=True)
    return exp.model.state_dict()


def checkpoint_step(path: Path) -> int | None:
    """The step of the checkpoint at `path` without loading its tensors (mapped, not read); None if absent."""
    if not path.exists():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])
