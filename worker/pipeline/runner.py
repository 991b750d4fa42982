"""The in-process runner: every stage on one device, actions executed in schedule order.

Each stage's input is a fresh leaf (`detach().requires_grad_()`), so a stage's backward is its own
action: B(j, i) pushes the gradient that B(j+1, i) left on that leaf back through boundary j's
autograd function (the backward codec) and stage j. Same maths as the unsplit model; bytes are
counted per boundary and compute time per action, from which `timeline.makespan` models the link.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from worker.pipeline import boundary as wire
from worker.pipeline.microbatch import loss_weights, scatter
from worker.pipeline.schedule import FORWARD, Action, get_schedule

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StepResult:
    loss: float
    correct: int
    count: int
    compute_s: dict[tuple[int, str, int], float] = field(default_factory=dict)


_NO_AUTOCAST = contextlib.nullcontext()


def _leaf(carry: Any) -> Any:
    if isinstance(carry, tuple):
        return tuple(_leaf(t) for t in carry)
    if carry.is_floating_point():
        return carry.detach().requires_grad_(True)
    return carry


def _full(logits: torch.Tensor) -> torch.Tensor:
    """Autocast's half-precision logits back to fp32 for the loss; fp32/fp64 untouched."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


# The C++ autograd engine, called as torch.autograd.backward calls it but without its Python wrapper (as
# Megatron-LM's pipeline schedules do). The wrapper re-checks each gradient's shape in Python (symbolic
# comparisons per dimension), builds ones for scalars and stashes the context for compiled autograd:
# ~60 us a call on a CPU, and a pipeline calls backward once per stage and micro-batch (12 times a step
# at 3 stages x 4). The engine itself still refuses a gradient of the wrong shape and casts its dtype, so
# every gradient is the same and a bad one still fails.
_run_backward = torch.autograd.Variable._execution_engine.run_backward  # type: ignore[attr-defined]


def _backward(tensors: tuple[torch.Tensor, ...], grads: tuple[torch.Tensor, ...]) -> None:
    """Backward from `tensors` given their gradients (the loss's: ones)."""
    _run_backward(tensors, grads, False, False, (), True, True)  # keep/create graph, inputs, allow_unreachable, accumulate


def _floats(carry: Any) -> list[torch.Tensor]:
    items = carry if isinstance(carry, tuple) else (carry,)
    return [t for t in items if t.is_floating_point()]


class InprocRunner:
    def __init__(
        self,
        stages: Sequence[nn.Module],
        boundaries: Sequence[wire.Boundary],
        *,
        schedule: str = "gpipe",
        microbatches: int = 1,
        loss_fn: LossFn | None = None,
        autocast_dtype: torch.dtype | None = None,
        time_actions: bool = True,
        scaler: torch.amp.GradScaler | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if len(boundaries) != len(stages) - 1:
            raise ValueError(f"{len(stages)} stages need {len(stages) - 1} boundaries, got {len(boundaries)}")
        self.stages = list(stages)
        self.boundaries = list(boundaries)
        self.schedule = schedule
        self.microbatches = microbatches
        self.actions: list[Action] = get_schedule(schedule)(len(stages), microbatches)
        self.loss_fn = loss_fn or nn.functional.cross_entropy
        self.autocast_dtype = autocast_dtype
        self.time_actions = time_actions
        self.scaler = scaler  # fp16: the last stage's loss is scaled before its backward
        self.clock = clock  # time.process_time measures CPU work alone on a busy CPU-only machine

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return _NO_AUTOCAST
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def train_step(self, x: Any, y: torch.Tensor, keys: torch.Tensor | None = None) -> StepResult:
        """Forward and backward of one batch; gradients accumulate in the stages' parameters.

        `keys` are per-sample ids (for `feedback: delta` codecs).
        """
        n, m = len(self.stages), self.microbatches
        xs = scatter(x, m)
        ys: list[torch.Tensor] = list(torch.tensor_split(y, m))
        ks: list[Any] = list(torch.tensor_split(keys, m)) if keys is not None else [None] * m
        weights = loss_weights([len(t) for t in ys])
        device = y.device
        sync = self.time_actions and device.type == "cuda"
        inputs: dict[tuple[int, int], Any] = {}  # (stage, mb) -> leaf input of stage > 0
        sent: dict[tuple[int, int], list[torch.Tensor]] = {}  # (stage, mb) -> tensors past boundary
        losses: dict[int, torch.Tensor] = {}
        loss_parts: list[torch.Tensor] = []  # kept on the device: no host sync per micro-batch
        correct_parts: list[torch.Tensor] = []
        compute: dict[tuple[int, str, int], float] = {}
        for a in self.actions:
            j, i = a.stage, a.microbatch
            t0 = self.clock()
            if a.op == FORWARD:
                inp = xs[i] if j == 0 else inputs[(j, i)]
                with self._autocast(device):
                    out = self.stages[j](inp)
                if j == n - 1:
                    logits = _full(out)
                    loss = self.loss_fn(logits, ys[i]) * weights[i]
                    losses[i] = loss
                    loss_parts.append(loss.detach())
                    correct_parts.append((logits.detach().argmax(-1) == ys[i]).sum())
                else:
                    crossed = wire.send(out, self.boundaries[j], i, ks[i])
                    sent[(j, i)] = _floats(crossed)
                    inputs[(j + 1, i)] = _leaf(crossed)
            else:
                if j == n - 1:
                    loss = losses.pop(i)
                    scaled = self.scaler.scale(loss) if self.scaler is not None else loss
                    _backward((scaled,), (torch.ones_like(scaled),))
                else:
                    received = _floats(inputs.pop((j + 1, i)))
                    pairs = [
                        (t, r.grad)
                        for t, r in zip(sent.pop((j, i)), received, strict=True)
                        if r.grad is not None and t.requires_grad
                    ]
                    if pairs:
                        boundary = self.boundaries[j]
                        if boundary.passthrough:
                            for _, g in pairs:
                                boundary.backward.count_dense(g, i)
                        _backward(tuple(t for t, _ in pairs), tuple(g for _, g in pairs))
            if sync:
                torch.cuda.synchronize(device)
            compute[(j, a.op, i)] = self.clock() - t0
        loss_sum, correct = torch.stack(loss_parts).sum(), torch.stack(correct_parts).sum()
        return StepResult(loss=float(loss_sum), correct=int(correct), count=len(y), compute_s=compute)

    @torch.no_grad()
    def predict(
        self, x: Any, boundaries: Sequence[wire.Boundary] | None = None, keys: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits for a whole batch; through `boundaries`' forward codecs, or dense when None.

        Evaluation gets its own boundaries so it never touches the training codecs' state or byte counts.
        """
        device = (x[0] if isinstance(x, tuple) else x).device
        carry = x
        with self._autocast(device):
            for j, stage in enumerate(self.stages):
                carry = stage(carry)
                if boundaries is not None and j < len(boundaries):
                    carry = wire.send(carry, boundaries[j], 0, keys)
        return _full(carry)

    def wire_stats(self) -> list[tuple[wire.ChannelStats, wire.ChannelStats]]:
        return [(b.forward.stats, b.backward.stats) for b in self.boundaries]

    def reset_stats(self) -> None:
        for b in self.boundaries:
            b.reset_stats()
