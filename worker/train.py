"""The training loop: build, partition, then step through the pipeline, evaluate, report, checkpoint.

`run(spec, on_metrics=..., on_log=..., on_progress=..., should_stop=...)` is what the Celery task and
`slimpipe train` call; it returns a summary dict.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from slimpipe import names
from slimpipe.spec import ExperimentSpec, dump_spec, parse_spec
from worker import zoo
from worker.pipeline.batchnorm import convert_deferred_batch_norm
from worker.pipeline.boundary import make_boundaries
from worker.pipeline.microbatch import to_device
from worker.pipeline.partition import resolve
from worker.pipeline.runner import InprocRunner
from worker.pipeline.timeline import makespan, transfer_seconds
from worker.zoo.common import parameter_sizes
from worker.zoo.data import batches, steps_per_epoch

CHECKPOINT = "checkpoint.pt"


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite."""


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device: cuda was asked for but no CUDA device is visible; use auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_threads(threads: int) -> None:
    """CPU threads for torch and for the codecs' numba kernels (oversubscribing them is 30x slower on 2 busy cores)."""
    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, int(getattr(numba.config, "NUMBA_NUM_THREADS", threads))))
    except ImportError:  # pragma: no cover - numba ships with the worker extra
        pass


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


class Experiment:
    """Everything a run needs, built from a spec: data, model, stages, boundaries, runner, optimizer."""

    def __init__(self, spec: ExperimentSpec, device: torch.device | None = None):
        self.spec = spec
        self.device = device or pick_device(spec.train.device)
        if spec.train.threads is not None:
            set_threads(spec.train.threads)
        torch.manual_seed(spec.train.seed)
        self.zoo_model, self.data = zoo.build(spec.model, spec.data)
        model = self.zoo_model.module
        if spec.pipeline.deferred_bn:
            convert_deferred_batch_norm(model, spec.pipeline.microbatches)
        self.model = model.to(self.device)
        self.stage_paths = zoo.stage_paths(self.zoo_model, spec.pipeline, lambda p: parameter_sizes(model, p))
        self.stages = [self.zoo_model.make_stage(items) for items in resolve(model, self.stage_paths)]
        n = len(self.stages)
        self.boundaries = make_boundaries(spec.compression, n, spec.train.seed)
        self.eval_boundaries = make_boundaries(spec.compression, n, spec.train.seed, evaluation=True)
        precision = spec.train.precision
        autocast = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self.runner = InprocRunner(
            self.stages,
            self.boundaries,
            schedule=spec.pipeline.schedule,
            microbatches=spec.pipeline.microbatches,
            autocast_dtype=autocast,
            scaler=torch.amp.GradScaler(self.device.type) if precision == "fp16" else None,
        )
        self.scaler = self.runner.scaler
        self.optimizer = make_optimizer(self.model, spec.optim)
        self.steps_per_epoch = steps_per_epoch(self.data.train, spec.data.batch_size)
        t = spec.train
        by_epochs = t.epochs * self.steps_per_epoch if t.epochs is not None else None
        self.max_steps: int = min(s for s in (t.max_steps, by_epochs) if s is not None)
        self._epoch_order: tuple[int, list] = (-1, [])

    def get_batch(self, step: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Batch `step`: epoch e's order depends only on (seed, e), so a resumed run sees the same data."""
        epoch, k = divmod(step, self.steps_per_epoch)
        if self._epoch_order[0] != epoch:
            g = torch.Generator().manual_seed(self.spec.train.seed * 100_003 + epoch)
            bs = min(self.spec.data.batch_size, len(self.data.train))
            self._epoch_order = (epoch, list(batches(self.data.train, bs, shuffle=True, generator=g, drop_last=True)))
        x, y, ids = self._epoch_order[1][k]
        return to_device(x, self.device), y.to(self.device), ids

    @torch.no_grad()
    def evaluate(self, compressed: bool) -> tuple[float, float]:
        """Mean loss and accuracy (%) on the validation split, through fresh eval codecs if compressed.
        The eval codecs never warm up (no train_step), so compressed evaluation is always compressed; they
        round to nearest (see boundary.for_evaluation)."""
        self.model.eval()
        for b in self.eval_boundaries:
            b.reset_codecs()
        size = self.spec.data.eval_batch_size or max(self.spec.data.batch_size, 64)
        loss_sum, correct, count = 0.0, 0, 0
        for x, y, ids in batches(self.data.val, size, shuffle=False):
            x, y = to_device(x, self.device), y.to(self.device)
            logits = self.runner.predict(x, self.eval_boundaries if compressed else None, keys=-1 - ids)
            loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
            count += len(y)
        for b in self.eval_boundaries:
            b.reset_stats()
        self.model.train()
        return loss_sum / count, 100.0 * correct / count

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


def save_checkpoint(exp: Experiment, step: int, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(exp.state_dict(step), tmp)
    tmp.replace(path)


def load_checkpoint(exp: Experiment, path: Path) -> int:
    return exp.load_state_dict(torch.load(path, map_location=exp.device, weights_only=True))


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run(
    spec: ExperimentSpec | dict,
    *,
    on_metrics: Callable[[list[dict]], None] | None = None,
    on_log: Callable[[str], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
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
        return _train(spec, out, log, emit, on_progress, should_stop, resume, t_start)
    finally:
        for f in (metrics_file, log_file):
            if f:
                f.close()


def _train(spec, out, log, emit, on_progress, should_stop, resume, t_start) -> dict[str, Any]:
    # ---- build
    exp = Experiment(spec)
    n_stages = len(exp.stages)
    link = spec.link
    start_step = 0
    ckpt = out / CHECKPOINT if out else None
    if resume and ckpt is not None and ckpt.exists():
        start_step = load_checkpoint(exp, ckpt)
        log(f"resumed from {ckpt} at step {start_step}")
    n_params = sum(p.numel() for p in exp.model.parameters())
    log(
        f"model {spec.model.name} ({n_params / 1e6:.2f}M params) on {exp.device}, data {spec.data.name} "
        f"({len(exp.data.train)} train / {len(exp.data.val)} val), {n_stages} stages "
        f"{' | '.join(','.join(s) for s in exp.stage_paths)}, schedule {spec.pipeline.schedule}, "
        f"{spec.pipeline.microbatches} micro-batches, {exp.max_steps} steps"
    )
    eval_modes = {"compressed": [True], "dense": [False], "both": [True, False]}[spec.train.eval_compression]

    # ---- train
    history: dict[str, list[float]] = {k: [] for k in ("time", "fwd", "bwd", "dense", "link", "model", "acc")}
    val_loss = val_acc = None
    best_val_acc: float | None = None
    dense_val: tuple[float, float] | None = None
    exp.model.train()
    step = start_step
    while step < exp.max_steps:
        if should_stop is not None and should_stop():
            log(f"stopped at step {step} on request")
            summary = {
                **_summary(exp, history, best_val_acc, val_acc, val_loss, dense_val, step, t_start),
                "cancelled": True,
            }
            if out is not None:
                (out / "summary.json").write_text(json.dumps(summary, indent=2))
            return summary
        x, y, ids = exp.get_batch(step)
        lr = lr_at(step, exp.max_steps, spec.optim)
        for group in exp.optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        exp.optimizer.zero_grad(set_to_none=True)
        exp.runner.reset_stats()
        for boundary in exp.boundaries:
            boundary.set_train_step(step)
        result = exp.runner.train_step(x, y, ids)
        if not math.isfinite(result.loss):
            raise TrainingDiverged(f"loss is {result.loss} at step {step + 1}; lower optim.lr or check the compression")
        if exp.scaler is not None:
            exp.scaler.step(exp.optimizer)
            exp.scaler.update()
        else:
            exp.optimizer.step()
        if exp.device.type == "cuda":
            torch.cuda.synchronize(exp.device)
        batch_s = time.perf_counter() - t0
        step += 1

        # ---- wire accounting and the modelled link
        stats = exp.runner.wire_stats()
        fwd = sum(f.wire_bytes for f, _ in stats)
        bwd = sum(b.wire_bytes for _, b in stats)
        dense = sum(f.dense_bytes + b.dense_bytes for f, b in stats)
        transfer: dict[tuple[int, str, int], float] = {}
        for i, (f, b) in enumerate(stats):
            for op, channel in (("F", f), ("B", b)):
                for mb, nbytes in channel.transfers:
                    key = (i, op, mb)
                    transfer[key] = transfer.get(key, 0.0) + transfer_seconds(
                        nbytes, link.bandwidth_mbps, link.latency_ms
                    )
        link_s = sum(transfer.values())
        serial = spec.pipeline.schedule == "sequential"
        modelled = makespan(exp.runner.actions, result.compute_s, {} if serial else transfer, serial=serial)
        train_acc = 100.0 * result.correct / result.count
        for series, value in (("time", batch_s), ("fwd", fwd), ("bwd", bwd), ("dense", dense), ("link", link_s)):
            history[series].append(value)
        history["model"].append(modelled)
        history["acc"].append(train_acc)

        # ---- evaluate
        evaluated = step % spec.train.eval_every == 0 or step == exp.max_steps
        values: dict[str, float] = {}
        if evaluated:
            for compressed in eval_modes:
                loss_v, acc_v = exp.evaluate(compressed)
                if compressed or spec.train.eval_compression == "dense":
                    val_loss, val_acc = loss_v, acc_v
                    values[names.VAL_LOSS], values[names.VAL_ACC] = loss_v, acc_v
                    best_val_acc = acc_v if best_val_acc is None else max(best_val_acc, acc_v)
                if not compressed and spec.train.eval_compression in ("dense", "both"):
                    dense_val = (loss_v, acc_v)
                    values[names.VAL_LOSS_DENSE], values[names.VAL_ACC_DENSE] = loss_v, acc_v

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
            for i, (f, b) in enumerate(stats):
                values[names.boundary_metric(i, "bytes_fwd")] = f.wire_bytes
                values[names.boundary_metric(i, "bytes_bwd")] = b.wire_bytes
                values[names.boundary_metric(i, "err_fwd")] = f.rel_error
                values[names.boundary_metric(i, "err_bwd")] = b.rel_error
                values[names.boundary_metric(i, "cos_fwd")] = f.cosine
                values[names.boundary_metric(i, "cos_bwd")] = b.cosine
            values[names.CODEC_CACHE_BYTES] = sum(boundary.cache_bytes for boundary in exp.boundaries)
            emit(step, values)
            log(
                f"step:{step}  loss_train:{result.loss:.4f}  acc1_train:{train_acc:.2f}  loss_val:{_fmt(val_loss)}  "
                f"acc1_val:{_fmt(val_acc, 2)}  time_per_batch:{batch_s:.4f}  wire_fwd:{fwd}  wire_bwd:{bwd}  "
                f"ratio:{dense / (fwd + bwd) if fwd + bwd else 1.0:.2f}  link_s:{link_s:.4f}  modelled_s:{modelled:.4f}"
            )
        if on_progress is not None:
            on_progress(step, exp.max_steps)
        if ckpt is not None and spec.train.checkpoint_every and step % spec.train.checkpoint_every == 0:
            save_checkpoint(exp, step, ckpt)

    summary = _summary(exp, history, best_val_acc, val_acc, val_loss, dense_val, step, t_start)
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _mean(values: list[float], skip_first: bool = False) -> float:
    if skip_first and len(values) > 1:
        values = values[1:]
    return sum(values) / len(values) if values else 0.0


def _summary(exp, history, best_val_acc, val_acc, val_loss, dense_val, step, t_start) -> dict[str, Any]:
    fwd, bwd, dense = _mean(history["fwd"]), _mean(history["bwd"]), _mean(history["dense"])
    window = history["acc"][-exp.steps_per_epoch :]
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
        "time_per_batch_s": _mean(history["time"], skip_first=True),
        "link_time_per_step_s": _mean(history["link"]),
        "modelled_time_per_batch_s": _mean(history["model"], skip_first=True),
        "steps": step,
        "max_steps": exp.max_steps,
        "n_stages": len(exp.stages),
        "stages": exp.stage_paths,
        "device": str(exp.device),
        "codec_cache_bytes": sum(boundary.cache_bytes for boundary in exp.boundaries),
        "wall_s": time.perf_counter() - t_start,
        "cancelled": False,
        "spec": dump_spec(exp.spec),
    }
