"""The training loop: build, partition, then step through the pipeline, evaluate, report, checkpoint.

`run(spec, on_metrics=..., on_log=..., on_progress=..., should_stop=...)` is what the Celery task and
`slimpipe train` call; it returns a summary dict.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from slimpipe import names
from slimpipe.spec import ExperimentSpec, dump_spec, parse_spec
from worker import zoo
from worker.pipeline.batchnorm import convert_deferred_batch_norm
from worker.pipeline.boundary import make_boundaries
from worker.pipeline.distributed import bubble_fraction
from worker.pipeline.microbatch import to_device
from worker.pipeline.partition import resolve
from worker.pipeline.runner import InprocRunner, StepResult
from worker.pipeline.timeline import Replay, link_transfers, makespan, transfer_sizes
from worker.pipeline.timeline import replay as modelled_events
from worker.zoo.common import parameter_sizes
from worker.zoo.data import EpochStream, batches, count_batches, steps_per_epoch

CHECKPOINT = "checkpoint.pt"
#: Starts stages on another worker: (queue, ranks, world size, rendezvous host, port) -> None.
PlaceStages = Callable[[str, list[int], int, str, int], None]
#: Steps whose per-action times and transfer sizes the summary's replay takes the median of (the latest ones).
REPLAY_WINDOW = 256


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite."""


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device: cuda was asked for but no CUDA device is visible; use auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def stage_device(name: str, rank: int) -> torch.device:
    """A distributed stage's device: `cuda:rank` (round robin over the visible GPUs) or the CPU."""
    device = pick_device(name)
    if device.type == "cuda":
        return torch.device("cuda", rank % torch.cuda.device_count())
    return device


def measure_error_every(spec: ExperimentSpec) -> int:
    """Distributed stages decode their own payloads to measure reconstruction error on these steps only."""
    return spec.train.eval_every


def set_threads(threads: int) -> None:
    """CPU threads for torch (intra- and inter-op) and for the codecs' numba kernels.

    Order matters: numba's OpenMP layer calls `omp_set_num_threads(NUMBA_NUM_THREADS)` in the libgomp
    torch shares when it starts its pool, which happens once per process (so again in every child forked
    from the worker's forkserver). Started after `torch.set_num_threads`, it silently put torch back to
    one thread per core: a `threads: 1` run then spun in libgomp. So numba first, torch last.
    """
    try:
        import numba

        numba.set_num_threads(min(threads, int(getattr(numba.config, "NUMBA_NUM_THREADS", threads))))
    except ImportError:  # pragma: no cover - numba ships with the worker extra
        pass
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only possible before inter-op work started in this process
        torch.set_num_interop_threads(threads)
    if torch.get_num_threads() != threads:  # pragma: no cover - a native library reset it again
        raise RuntimeError(f"torch runs {torch.get_num_threads()} threads after set_num_threads({threads})")


def lr_at(step: int, total: int, optim) -> float:
    """Linear warm-up, then constant, cosine or linear decay to zero at `total`."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    progress = (step - optim.warmup_steps) / max(1, total - optim.warmup_steps)
    if optim.schedule == "cosine":
        return optim.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if optim.schedule == "linear":
        return optim.lr * (1 - progress)
    return optim.lr


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices and kernels only: biases and norm weights (1-D) are left out, as the
    transformers recipes do."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def make_optimizer(model: torch.nn.Module, optim) -> torch.optim.Optimizer:
    if optim.name == "adamw":
        return torch.optim.AdamW(decay_groups(model, optim.weight_decay), lr=optim.lr)
    return torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)


def release_weights(model: torch.nn.Module, keep: torch.nn.Module) -> None:
    """Move every parameter and buffer of `model` that `keep` does not hold to the meta device: shapes
    stay (parameter counts, stage sizes), storage goes. A weight `keep` shares with another stage stays."""
    kept = {id(t) for t in (*keep.parameters(), *keep.buffers())}
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None and id(param) not in kept and not param.is_meta:
                module._parameters[name] = torch.nn.Parameter(param.to("meta"), param.requires_grad)
        for name, buffer in module._buffers.items():
            if buffer is not None and id(buffer) not in kept and not buffer.is_meta:
                module._buffers[name] = buffer.to("meta")


class Evaluation(NamedTuple):
    """One pass over the validation split (or its first batches)."""

    loss: float  # mean cross-entropy
    acc: float  # top-1, %
    # Seconds between the last two batches' ends (None with one batch): a batch's time once the stages are
    # warm and, where they run side by side, the pipeline is full (check_evaluation prices an evaluation
    # point from it)
    gap_s: float | None


class Experiment:
    """Everything a run needs, built from a spec: data, model, stages, boundaries, runner, optimizer."""

    def __init__(self, spec: ExperimentSpec, device: torch.device | None = None, only_stage: int | None = None,
                 on_meta: bool = False):
        """`only_stage`: a process of the distributed runner, which puts only that stage on `device` (rank 0
        releases the other stages' weights once it has sent them, see DistributedExperiment).
        `on_meta`: a stage process (worker.stage): the model is built on the meta device, shapes without
        storage, and `StageProgram.receive_weights` puts rank 0's weights for `only_stage` on `device`; no
        process but rank 0 holds the whole model, even for a moment."""
        self.spec = spec
        self.device = device or pick_device(spec.train.device)
        # Compute time: CPU seconds of this process where the device is the CPU (other processes on a shared
        # machine do not inflate it), wall time (synchronised) on CUDA.
        self.clock = time.process_time if self.device.type == "cpu" else time.perf_counter
        if spec.train.threads is not None:
            set_threads(spec.train.threads)
        torch.manual_seed(spec.train.seed)
        self.zoo_model, self.data = zoo.build(spec.model, spec.data, on_meta=on_meta)
        model = self.zoo_model.module
        if spec.pipeline.deferred_bn:
            with torch.device("meta") if on_meta else contextlib.nullcontext():
                convert_deferred_batch_norm(model, spec.pipeline.microbatches)
        self.dtype = torch.float64 if spec.train.precision == "fp64" else None
        self.stage_paths = zoo.stage_paths(self.zoo_model, spec.pipeline, lambda p: parameter_sizes(model, p))
        self.stages = [self.zoo_model.make_stage(items) for items in resolve(model, self.stage_paths)]
        if not on_meta:
            (model if only_stage is None else self.stages[only_stage]).to(self.device, dtype=self.dtype)
        self.model = model
        n = len(self.stages)
        self.boundaries = make_boundaries(spec.compression, n, spec.train.seed)
        self.eval_boundaries = make_boundaries(spec.compression, n, spec.train.seed, evaluation=True)
        precision = spec.train.precision
        autocast = {"fp32": None, "fp64": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self.runner = InprocRunner(
            self.stages,
            self.boundaries,
            schedule=spec.pipeline.schedule,
            microbatches=spec.pipeline.microbatches,
            autocast_dtype=autocast,
            scaler=torch.amp.GradScaler(self.device.type) if precision == "fp16" else None,
            clock=self.clock,
        )
        self.scaler = self.runner.scaler
        # over the kept stage only: an optimizer over the whole model would keep the released weights alive
        self.optimizer = make_optimizer(self.model if only_stage is None else self.stages[only_stage], spec.optim)
        self.steps_per_epoch = steps_per_epoch(self.data.train, spec.data.batch_size)
        t = spec.train
        by_epochs = t.epochs * self.steps_per_epoch if t.epochs is not None else None
        self.max_steps: int = min(s for s in (t.max_steps, by_epochs) if s is not None)
        seed = spec.train.seed
        self.train_batches = EpochStream(self.data.train, spec.data.batch_size, lambda epoch: seed * 100_003 + epoch)

    def get_batch(self, step: int, inputs: bool = True) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Batch `step` (inputs None unless `inputs`): epoch e's order and augmentation depend only on
        (seed, e), so a resumed run sees the same data."""
        x, y, ids = self.train_batches.get(step, inputs)
        return (self._inputs(x) if inputs else None), y.to(self.device), ids

    def _inputs(self, x: Any) -> Any:
        x = to_device(x, self.device)
        if self.dtype is None:
            return x
        if isinstance(x, tuple):
            return tuple(t.to(self.dtype) if t.is_floating_point() else t for t in x)
        return x.to(self.dtype) if x.is_floating_point() else x

    @property
    def actions(self):
        return self.runner.actions

    def codec_cache_bytes(self) -> int:
        """Memory the boundaries' feedback codecs hold (delta references, ef residuals), both ends."""
        return sum(boundary.cache_bytes for boundary in self.boundaries)

    def train_step(self, step: int, lr: float) -> StepResult:
        """Batch `step` forward and backward through the pipeline, then one optimizer step at `lr`."""
        x, y, ids = self.get_batch(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        self.runner.reset_stats()
        for boundary in self.boundaries:
            boundary.set_train_step(step)
        result = self.runner.train_step(x, y, ids)
        if not math.isfinite(result.loss):
            raise TrainingDiverged(f"loss is {result.loss} at step {step + 1}; lower optim.lr or check the compression")
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return result

    def wire_stats(self):
        return self.runner.wire_stats()

    def close(self, graceful: bool = True) -> None:
        pass

    @torch.no_grad()
    def evaluate(self, compressed: bool, limit: int = 0, batch_size: int = 0) -> Evaluation:
        """Mean loss and accuracy (%) on the validation split (its first `limit` batches if limit > 0, in
        batches of `batch_size` if > 0, else data.eval_batch), through fresh eval codecs if compressed.
        The eval codecs never warm up (no train_step), so compressed evaluation is always compressed; they
        round to nearest (see boundary.for_evaluation)."""
        self.model.eval()
        for b in self.eval_boundaries:
            b.reset_codecs()
        loss_sum, correct, count = 0.0, 0, 0
        val = batches(self.data.val, batch_size or self.spec.data.eval_batch, shuffle=False)
        ends: list[float] = []
        for x, y, ids in itertools.islice(val, limit or None):
            x, y = self._inputs(x), y.to(self.device)
            logits = self.runner.predict(x, self.eval_boundaries if compressed else None, keys=-1 - ids)
            loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
            count += len(y)
            ends.append(time.perf_counter())  # float() above waited for the device
        for b in self.eval_boundaries:
            b.reset_stats()
        self.model.train()
        return Evaluation(loss_sum / count, 100.0 * correct / count, ends[-1] - ends[-2] if len(ends) > 1 else None)

    # ------------------------------------------------------------------- checkpoints

    def state_dict(self, step: int) -> dict[str, Any]:
        return {
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "codecs": [b.codec_state() for b in self.boundaries],
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> int:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for boundary, codec_state in zip(self.boundaries, state["codecs"], strict=False):
            boundary.load_codec_state(codec_state)
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        return int(state["step"])


    def save_checkpoint(self, path: Path, step: int, progress: dict[str, Any]) -> None:
        """The training state at `step`, and `progress`: the run's figures so far (best accuracy...)."""
        tmp = path.with_suffix(".tmp")
        torch.save({**self.state_dict(step), "progress": progress}, tmp)
        tmp.replace(path)

    def load_checkpoint(self, path: Path) -> tuple[int, dict[str, Any]]:
        state = torch.load(path, map_location=self.device, weights_only=True)
        return self.load_state_dict(state), dict(state.get("progress") or {})


class DistributedExperiment(Experiment):
    """Rank 0 of a `runner: distributed` run: starts the other stages on this host, runs stage 0, and
    turns every step into a command for all ranks plus a gather of their figures (worker.pipeline.distributed)."""

    def __init__(self, spec: ExperimentSpec, workdir: Path, place_stages: PlaceStages | None = None,
                 log: Callable[[str], None] = lambda line: None):
        from worker.memory import blocks_of_their_own
        from worker.pipeline import launch
        from worker.pipeline.distributed import StageProgram

        self.stages_started: launch.LocalStages | None = None
        self.program: StageProgram | None = None
        n = spec.n_stages
        if n is None:  # the model's default partition: build first to count the stages
            with blocks_of_their_own():
                super().__init__(spec, device=stage_device(spec.train.device, 0), only_stage=0)
            n = len(self.stages)
        placement = spec.pipeline.placement
        if placement is not None and place_stages is None:
            log("pipeline.placement names worker queues, which only a run through the service uses; "
                "every stage runs on this machine")
            placement = None
        remote: dict[str, list[int]] = {}
        for rank in range(1, n):
            if placement is not None and placement[rank] != placement[0]:
                remote.setdefault(placement[rank], []).append(rank)
        host = launch.advertised_host() if remote else "127.0.0.1"
        store = launch.open_store(host)
        try:
            local = [r for r in range(1, n) if not any(r in ranks for ranks in remote.values())]
            t_launch = time.perf_counter()
            self.stages_started = launch.LocalStages(
                dump_spec(spec), local, n, host=host, port=store.port, threads=spec.train.threads,
                workdir=workdir, out_dir=workdir,
            )
            for queue, ranks in remote.items():
                place_stages(queue, ranks, n, host, store.port)  # type: ignore[misc]
                log(f"stages {', '.join(map(str, ranks))} sent to queue {queue!r}; rendezvous at {host}:{store.port}")
            if not hasattr(self, "stages"):
                with blocks_of_their_own():
                    super().__init__(spec, device=stage_device(spec.train.device, 0), only_stage=0)
            self.clock = time.perf_counter  # a step spans every stage process: only wall time measures it
            local_stages = self.stages_started
            local_stages.wait_ready(store)
            for queue, ranks in remote.items():

                def late(rank: int, q: str = queue) -> str:
                    return (f"stage {rank} placed on queue {q!r} did not join within {launch.PLACEMENT_TIMEOUT_S:.0f} s: "
                            f"start a worker that consumes {q!r} (python -m worker --queues {q}) or change pipeline.placement")

                launch.wait_ready(store, ranks, launch.PLACEMENT_TIMEOUT_S, lambda: local_stages.failure, late)
            log(f"all {n} stage processes ready in {time.perf_counter() - t_launch:.1f} s")
            control = launch.init_group(store, 0, n)
            self.program = StageProgram(self, 0, n, control=control, measure_error_every=measure_error_every(spec))
            t_send = time.perf_counter()
            with self._guard():
                sent = self.program.send_weights()
            receivers = "stage 1" if n == 2 else f"stages 1-{n - 1}"
            log(f"initial weights of {receivers} sent in {time.perf_counter() - t_send:.1f} s ({sent / 1e6:.1f} MB)")
            release_weights(self.model, keep=self.stages[0])  # rank 0's device holds stage 0 only
        except BaseException:
            self.close(graceful=False)
            raise
        self._wire: list = []
        self._cache_bytes = 0

    @contextlib.contextmanager
    def _guard(self):
        try:
            yield
        except (RuntimeError, OSError) as exc:
            if self.stages_started is None:
                raise
            self.stages_started.raise_failure(exc)

    def train_step(self, step: int, lr: float) -> StepResult:
        from worker.pipeline.distributed import TRAIN, step_result

        assert self.program is not None
        with self._guard():
            self.program.command(TRAIN, step, lr)
            vectors = self.program.gather(self.program.train_step(step, lr))
        result, self._wire = step_result(vectors, self.spec.pipeline.microbatches)  # type: ignore[arg-type]
        self._cache_bytes = result.cache_bytes
        if not math.isfinite(result.loss):
            raise TrainingDiverged(f"loss is {result.loss} at step {step + 1}; lower optim.lr or check the compression")
        return result

    def wire_stats(self):
        return self._wire

    def codec_cache_bytes(self) -> int:
        """Summed over the stage processes at the last step (this process holds only stage 0's codec ends)."""
        return self._cache_bytes

    @torch.no_grad()
    def evaluate(self, compressed: bool, limit: int = 0, batch_size: int = 0) -> Evaluation:
        from worker.pipeline.distributed import EVAL_COMPRESSED, EVAL_DENSE

        assert self.program is not None
        with self._guard():
            self.program.command(EVAL_COMPRESSED if compressed else EVAL_DENSE, limit, batch_size)
            vectors = self.program.gather(self.program.evaluate(compressed, limit, batch_size))
        assert vectors is not None
        loss_sum, correct, count, gap = vectors[-1].tolist()  # the last stage's
        return Evaluation(loss_sum / count, 100.0 * correct / count, None if math.isnan(gap) else gap)

    def save_checkpoint(self, path: Path, step: int, progress: dict[str, Any]) -> None:
        from worker.pipeline.distributed import SAVE

        assert self.program is not None
        with self._guard():
            self.program.command(SAVE, step)
            self.program.save(path.parent, step)
            self.program.gather([0.0])
        tmp = path.with_suffix(".tmp")
        torch.save({"step": step, "stages": len(self.stages), "progress": progress}, tmp)
        tmp.replace(path)

    def load_checkpoint(self, path: Path) -> tuple[int, dict[str, Any]]:
        from worker.pipeline.distributed import LOAD

        assert self.program is not None
        with self._guard():
            self.program.command(LOAD)
            steps = self.program.gather([float(self.program.load(path.parent))])
        found = {int(v.item()) for v in steps}  # type: ignore[union-attr]
        if len(found) != 1:
            raise ValueError(f"the stages' checkpoints are from different steps {sorted(found)}; start over without resume")
        progress = torch.load(path, weights_only=True).get("progress") or {}
        return found.pop(), dict(progress)

    def close(self, graceful: bool = True) -> None:
        """Tell every stage to stop and let them exit (graceful), or end their processes at once."""
        import torch.distributed as dist

        from worker.pipeline.distributed import STOP

        graceful = graceful and self.stages_started is not None and self.stages_started.failure is None
        if not graceful and self.stages_started is not None:
            self.stages_started.close(grace_s=0.0)
        if self.program is not None:
            with contextlib.suppress(Exception):
                if graceful:
                    self.program.command(STOP)
                self.program.close(flush=graceful)
            self.program = None
        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
        if self.stages_started is not None:
            self.stages_started.close()


def make_experiment(spec: ExperimentSpec, workdir: Path, place_stages: PlaceStages | None = None,
                    log: Callable[[str], None] = lambda line: None) -> Experiment:
    if spec.pipeline.runner == "distributed":
        return DistributedExperiment(spec, workdir, place_stages, log)
    return Experiment(spec)


def save_checkpoint(exp: Experiment, step: int, path: Path, progress: dict[str, Any] | None = None) -> None:
    exp.save_checkpoint(path, step, progress or {})


def load_checkpoint(exp: Experiment, path: Path) -> tuple[int, dict[str, Any]]:
    """(the step the checkpoint was taken after, the run's figures then: best/final validation)."""
    return exp.load_checkpoint(path)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run(
    spec: ExperimentSpec | dict,
    *,
    on_metrics: Callable[[list[dict]], None] | None = None,
    on_log: Callable[[str], None] | None = None,
    on_progress: Callable[[int, int, float | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    place_stages: PlaceStages | None = None,
) -> dict[str, Any]:
    """Train `spec`; report through the callbacks; return the summary (also summary.json in out_dir)."""
    spec = parse_spec(spec)
    t_start = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    metrics_file = (out / "metrics.jsonl").open("a" if resume else "w") if out else None
    log_file = (out / "log.txt").open("a" if resume else "w") if out else None

    def log(line: str) -> None:
        if log_file:
            log_file.write(line + "\n")
            log_file.flush()
        if on_log:
            on_log(line)

    def emit(step: int, values: dict[str, float]) -> None:
        points = [{"step": step, "name": k, "value": float(v)} for k, v in values.items()]
        if metrics_file:
            metrics_file.writelines(json.dumps(p) + "\n" for p in points)
            metrics_file.flush()
        if on_metrics:
            on_metrics(points)

    try:
        return _train(spec, out, log, emit, on_progress, should_stop, resume, t_start, place_stages)
    finally:
        for f in (metrics_file, log_file):
            if f:
                f.close()


def _train(spec, out, log, emit, on_progress, should_stop, resume, t_start, place_stages) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        workdir = out if out is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        exp = make_experiment(spec, workdir, place_stages, log)
        try:
            summary = _loop(exp, spec, out, log, emit, on_progress, should_stop, resume, t_start)
        except BaseException:
            exp.close(graceful=False)  # the other stages may be mid-step: end them, do not wait on them
            raise
        exp.close()
        return summary


def _loop(exp, spec, out, log, emit, on_progress, should_stop, resume, t_start) -> dict[str, Any]:
    # ---- build
    n_stages = len(exp.stages)
    link = spec.link
    start_step = 0
    progress: dict[str, Any] = {}
    ckpt = out / CHECKPOINT if out else None
    if resume and ckpt is not None and ckpt.exists():
        start_step, progress = load_checkpoint(exp, ckpt)
        log(f"resumed from {ckpt} at step {start_step}")
    n_params = sum(p.numel() for p in exp.model.parameters())
    log(
        f"model {spec.model.name} ({n_params / 1e6:.2f}M params) on {exp.device}, data {spec.data.name} "
        f"({len(exp.data.train)} train / {len(exp.data.val)} val), {n_stages} stages "
        f"{' | '.join(','.join(s) for s in exp.stage_paths)}, schedule {spec.pipeline.schedule}, "
        f"{spec.pipeline.microbatches} micro-batches, {exp.max_steps} steps, runner {spec.pipeline.runner}"
    )
    for note in exp.zoo_model.notes:
        log(f"model {spec.model.name}: {note}")
    if spec.data.batch_size > len(exp.data.train):
        log(f"data.batch_size {spec.data.batch_size} is more than the {len(exp.data.train)} training samples: "
            f"every step trains on all {len(exp.data.train)}")
    eval_modes = {"compressed": [True], "dense": [False], "both": [True, False]}[spec.train.eval_compression]

    # ---- train
    history: dict[str, list[float]] = {
        k: [] for k in ("time", "wall", "fwd", "bwd", "dense", "link", "model", "acc", "bubble")
    }
    timeline: dict[str, Any] | None = None  # the last evaluated step, measured (distributed) and modelled
    actions_s: dict[tuple[int, str, int], deque[float]] = {}  # per action, its latest compute times
    transfers: dict[tuple[int, str, int], deque[tuple[int, int]]] = {}  # per transfer, its latest (bytes, messages)

    def replay() -> Replay:
        return _replay(exp, actions_s, transfers)

    # the validation figures so far (a resumed run's from its checkpoint)
    val_loss, val_acc = progress.get("val_loss"), progress.get("val_acc")
    best_val_acc: float | None = progress.get("best_val_acc")
    dense_val: tuple[float, float] | None = (*progress["dense_val"],) if progress.get("dense_val") else None
    exp.model.train()
    step = start_step
    eval_estimate_s = check_evaluation(exp, eval_modes, log) if step < exp.max_steps else 0.0
    time_left = TimeLeft(exp.max_steps, spec.train.eval_every, eval_estimate_s)
    every = spec.train.checkpoint_every if ckpt is not None else None

    def checkpoint(at: int) -> None:
        assert ckpt is not None
        figures = {"val_loss": val_loss, "val_acc": val_acc, "best_val_acc": best_val_acc,
                   "dense_val": list(dense_val) if dense_val else None}
        save_checkpoint(exp, at, ckpt, figures)
    while step < exp.max_steps:
        if should_stop is not None and should_stop():
            if every and step > start_step and step % every:  # a cancel is a pause: a retry continues here
                checkpoint(step)
            log(f"stopped at step {step} on request")
            summary = {
                **_summary(exp, history, replay(), best_val_acc, val_acc, val_loss, dense_val, step, t_start),
                "cancelled": True,
            }
            if out is not None:
                (out / "summary.json").write_text(json.dumps(summary, indent=2))
            return summary
        lr = lr_at(step, exp.max_steps, spec.optim)
        t0, c0 = time.perf_counter(), exp.clock()
        eval_s: float | None = None
        result = exp.train_step(step, lr)
        batch_s, wall_s = exp.clock() - c0, time.perf_counter() - t0
        step += 1

        # ---- wire accounting and the modelled link
        stats = exp.wire_stats()
        fwd = sum(f.wire_bytes for f, _ in stats)
        bwd = sum(b.wire_bytes for _, b in stats)
        dense = sum(f.dense_bytes + b.dense_bytes for f, b in stats)
        sizes = transfer_sizes(stats)
        transfer = link_transfers(sizes, link.bandwidth_mbps, link.latency_ms)
        link_s = sum(map(sum, transfer.values()))
        serial = spec.pipeline.schedule == "sequential"
        modelled = makespan(exp.actions, result.compute_s, {} if serial else transfer, serial=serial)
        train_acc = 100.0 * result.correct / result.count
        if step > start_step + 1 or exp.max_steps - start_step == 1:  # the first step warms caches up
            for key, seconds in result.compute_s.items():
                actions_s.setdefault(key, deque(maxlen=REPLAY_WINDOW)).append(seconds)
            for key, size in sizes.items():
                transfers.setdefault(key, deque(maxlen=REPLAY_WINDOW)).append(size)
        series_names = ("time", "wall", "fwd", "bwd", "dense", "link", "model", "acc")
        for series, value in zip(series_names, (batch_s, wall_s, fwd, bwd, dense, link_s, modelled, train_acc), strict=True):
            history[series].append(value)
        stage_figures = getattr(result, "stages", None)
        if stage_figures:
            history["bubble"].append(bubble_fraction(stage_figures, batch_s))

        # ---- evaluate
        evaluated = step % spec.train.eval_every == 0 or step == exp.max_steps
        values: dict[str, float] = {}
        if evaluated:
            timeline = {
                "step": step,
                "measured": getattr(result, "timeline", None),
                "modelled": modelled_events(exp.actions, result.compute_s, {} if serial else transfer, serial=serial),
            }
            e0 = time.perf_counter()
            for compressed in eval_modes:
                loss_v, acc_v, _ = exp.evaluate(compressed)
                if compressed or spec.train.eval_compression == "dense":
                    val_loss, val_acc = loss_v, acc_v
                    values[names.VAL_LOSS], values[names.VAL_ACC] = loss_v, acc_v
                    best_val_acc = acc_v if best_val_acc is None else max(best_val_acc, acc_v)
                if not compressed and spec.train.eval_compression in ("dense", "both"):
                    dense_val = (loss_v, acc_v)
                    values[names.VAL_LOSS_DENSE], values[names.VAL_ACC_DENSE] = loss_v, acc_v
            eval_s = time.perf_counter() - e0

        # ---- report
        if step % spec.train.log_every == 0 or evaluated:
            values.update(
                {
                    names.TRAIN_LOSS: result.loss,
                    names.TRAIN_ACC: train_acc,
                    names.TIME_BATCH: batch_s,
                    names.WIRE_BYTES_FWD: fwd,
                    names.WIRE_BYTES_BWD: bwd,
                    names.WIRE_RATIO: dense / (fwd + bwd) if fwd + bwd else 1.0,
                    names.LINK_TIME: link_s,
                    names.LR: lr,
                }
            )
            for i, ((f, b), boundary) in enumerate(zip(stats, exp.boundaries, strict=True)):
                values[names.boundary_metric(i, "bytes_fwd")] = f.wire_bytes
                values[names.boundary_metric(i, "bytes_bwd")] = b.wire_bytes
                for direction, figures, channel in (("fwd", f, boundary.forward), ("bwd", b, boundary.backward)):
                    # a compressed channel's error only where it was measured (distributed stages decode
                    # their own payloads on evaluation steps only; feedback codecs never): not a 0 / 1
                    if channel.dense or figures.ref_sq > 0:
                        values[names.boundary_metric(i, f"err_{direction}")] = figures.rel_error
                        values[names.boundary_metric(i, f"cos_{direction}")] = figures.cosine
            values[names.CODEC_CACHE_BYTES] = exp.codec_cache_bytes()
            if stage_figures:
                values[names.PIPELINE_BUBBLE] = history["bubble"][-1]
                for fig in stage_figures:
                    values[names.stage_metric(fig.stage, "compute_s")] = fig.compute_s + fig.optimizer_s
                    values[names.stage_metric(fig.stage, "recv_wait_s")] = fig.recv_wait_s
                    values[names.stage_metric(fig.stage, "send_s")] = fig.send_s
                    values[names.stage_metric(fig.stage, "idle_s")] = max(0.0, batch_s - fig.compute_s - fig.optimizer_s)
            emit(step, values)
            log(
                f"step:{step}  loss_train:{result.loss:.4f}  acc1_train:{train_acc:.2f}  loss_val:{_fmt(val_loss)}  "
                f"acc1_val:{_fmt(val_acc, 2)}  time_per_batch:{batch_s:.4f}  wire_fwd:{fwd}  wire_bwd:{bwd}  "
                f"ratio:{dense / (fwd + bwd) if fwd + bwd else 1.0:.2f}  link_s:{link_s:.4f}  modelled_s:{modelled:.4f}"
            )
        time_left.record(eval_s)
        if on_progress is not None:
            on_progress(step, exp.max_steps, time_left.seconds(step))
        if every and (step % every == 0 or step == exp.max_steps):  # and the trained model at the end
            checkpoint(step)

    summary = _summary(exp, history, replay(), best_val_acc, val_acc, val_loss, dense_val, step, t_start)
    summary["timeline"] = timeline
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


CHECK_SAMPLES = 8  # the first evaluation pass's batch: enough to run every kernel once, cheap at any size


def check_evaluation(exp, eval_modes: list[bool], log: Callable[[str], None]) -> float:
    """Evaluation in each mode before the first step (as Lightning's sanity check), so that one that fails
    does so now, not at its first point after minutes or hours of training: a few samples first (which
    loads kernels), then the first two validation batches, timed, to price an evaluation point for the ETA
    until one is timed (evaluation runs without autograd, in batches of its own size: training steps do not
    price it). n batches cost the two's time plus n - 2 gaps between the two's ends: stage processes pass
    batches on, so a batch through every stage costs more than the next one's gap, and over one host's
    cores or a slow link a gap costs more than the busiest stage."""
    n = count_batches(exp.data.val, exp.spec.data.eval_batch)
    for compressed in eval_modes:
        exp.evaluate(compressed, limit=1, batch_size=min(CHECK_SAMPLES, exp.spec.data.eval_batch))
    timed_s, estimate_s = 0.0, 0.0
    for compressed in eval_modes:
        t0 = time.perf_counter()
        gap_s = exp.evaluate(compressed, limit=2).gap_s
        two_s = time.perf_counter() - t0
        timed_s += two_s
        estimate_s += two_s + max(n - 2, 0) * (gap_s or 0.0)
    modes = " and ".join("compressed" if c else "dense" for c in eval_modes)
    log(f"evaluation checked ({modes}) on the first {min(n, 2)} of {n} validation batches in {timed_s:.3g} s: "
        f"about {estimate_s:.3g} s an evaluation point")
    return estimate_s


class TimeLeft:
    """The ETA a run reports: steps to go x the median wall time of a step, plus evaluation points to
    go x the median wall time of one (each over the latest `window`). The first step of a session is
    left out (it compiles kernels and warms caches), and so are evaluations from the steps' figure; a
    mean since the start would spread the start-up and every evaluation's pause over all the steps.
    Until an evaluation has been timed, one costs `eval_estimate_s` (check_evaluation's)."""

    def __init__(self, max_steps: int, eval_every: int, eval_estimate_s: float = 0.0, window: int = 200):
        self.max_steps, self.eval_every, self.eval_estimate_s = max_steps, eval_every, eval_estimate_s
        self.steps: deque[float] = deque(maxlen=window)
        self.evals: deque[float] = deque(maxlen=window)
        self._last: float | None = None

    def record(self, eval_s: float | None = None, now: float | None = None) -> None:
        """A step ended (after `eval_s` seconds of evaluation, if it evaluated): its time is everything
        since the previous step ended (checkpoints, the service's bookkeeping) but the evaluation."""
        now = time.perf_counter() if now is None else now
        if self._last is not None:
            self.steps.append(now - self._last - (eval_s or 0.0))
        self._last = now
        if eval_s is not None:
            self.evals.append(eval_s)

    def evaluations_after(self, step: int) -> int:
        """Evaluation points in (step, max_steps]: every eval_every-th step, and the last."""
        if step >= self.max_steps:
            return 0
        e = self.eval_every
        return self.max_steps // e - step // e + (1 if self.max_steps % e else 0)

    def seconds(self, step: int) -> float | None:
        if not self.steps:
            return None
        per_eval = statistics.median(self.evals) if self.evals else self.eval_estimate_s
        return (self.max_steps - step) * statistics.median(self.steps) + self.evaluations_after(step) * per_eval


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _steady(values: list[float]) -> list[float]:
    """Every step but the first (which warms caches and compiles kernels), unless it is the only one."""
    return values[1:] if len(values) > 1 else values


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else _mean(values)


def _replay(exp, actions_s, transfers) -> Replay:
    """The pipeline as a representative step: each action's median compute time, each transfer's median size."""
    compute = {key: statistics.median(times) for key, times in actions_s.items()}
    sizes = {key: (statistics.median(n for n, _ in seen), max(k for _, k in seen)) for key, seen in transfers.items()}
    return Replay(exp.spec.pipeline.schedule, list(exp.runner.actions), compute, sizes)


def _summary(exp, history, replay, best_val_acc, val_acc, val_loss, dense_val, step, t_start) -> dict[str, Any]:
    fwd, bwd, dense = _mean(history["fwd"]), _mean(history["bwd"]), _mean(history["dense"])
    window = history["acc"][-exp.steps_per_epoch :]
    link = exp.spec.link
    times, walls = _steady(history["time"]), _steady(history["wall"])
    plan = replay.plan(link.bandwidth_mbps, link.latency_ms)
    return {
        "best_val_acc": best_val_acc,
        "final_val_acc": val_acc,
        "final_val_loss": val_loss,
        "final_val_dense_acc": dense_val[1] if dense_val else None,
        "final_train_acc": _mean(window),
        "wire_bytes_fwd_per_step": fwd,
        "wire_bytes_bwd_per_step": bwd,
        "wire_bytes_per_step": fwd + bwd,
        "dense_bytes_per_step": dense,
        "compression_ratio": dense / (fwd + bwd) if fwd + bwd else 1.0,
        "time_clock": "cpu" if exp.clock is time.process_time else "wall",
        "time_per_batch_s": statistics.median(times) if times else 0.0,
        "time_per_batch_p90_s": _p90(times),
        "wall_time_per_batch_s": statistics.median(walls) if walls else 0.0,
        "link_time_per_step_s": _mean(history["link"]),
        "runner": exp.spec.pipeline.runner,
        "modelled_time_per_batch_s": plan["time_per_batch_s"],
        "modelled_time_per_batch_p90_s": _p90(_steady(history["model"])),
        "one_device_time_per_batch_s": plan["one_device_time_per_batch_s"],
        "speedup_vs_one_device": plan["speedup_vs_one_device"],
        "replay": replay.to_json(),
        "bubble_fraction": statistics.median(history["bubble"]) if history["bubble"] else None,
        "steps": step,
        "max_steps": exp.max_steps,
        "n_stages": len(exp.stages),
        "stages": exp.stage_paths,
        "device": str(exp.device),
        "codec_cache_bytes": exp.codec_cache_bytes(),
        "wall_s": time.perf_counter() - t_start,
        "cancelled": False,
        "spec": dump_spec(exp.spec),
    }
