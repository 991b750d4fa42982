"""The distributed runner: one process per stage, torch.distributed between them.

Every rank builds the same `Experiment` from the spec and seed (same batches, same partition): rank 0 with
the model's weights, every other rank on the meta device, shapes only, until rank 0 sends its stage's
weights (`send_weights`), so no stage process ever holds the whole model. Each rank keeps its own stage,
an optimizer over that stage's parameters, and its ends of the two boundaries beside it. Rank 0 also
drives: before each step or evaluation it broadcasts a small command on a gloo control group, runs its
own part, and gathers a fixed-size vector of figures from every rank (loss, per-action compute times and
start/end stamps, receive waits, wire bytes per micro-batch). So `worker.train` runs
the same loop, reports the same metric names and writes the same summary for both runners.

Within a step a rank walks its row of the schedule table (`schedule.get_schedule`): F(i) takes micro-batch
i from the previous stage's channel (or the batch), runs the stage, encodes and hands the result to the
next stage's outbox, which sends it while the stage computes on; B(i) takes the gradient from the next
stage, back-propagates, and sends the input gradient back. The codecs, and so the bytes, are exactly the
in-process runner's (`boundary.Channel`): same spec and seed give the same losses.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from worker.pipeline.boundary import Boundary, Channel, ChannelStats, RawCodec
from worker.pipeline.link import EmulatedLink
from worker.pipeline.microbatch import loss_weights, scatter
from worker.pipeline.runner import StepResult, _backward, _full, _leaf
from worker.pipeline.schedule import BACKWARD, FORWARD
from worker.pipeline.transport import Inbox, Outbox, pack, unpack

TRAIN, EVAL_COMPRESSED, EVAL_DENSE, SAVE, LOAD, STOP = range(6)
#: The largest tensor listing a stage accepts from rank 0 (names, dtypes, shapes as JSON; a stage's is a few kB).
MAX_MANIFEST_BYTES = 1 << 24
_RAW_MAGIC = b"SPR1"
# Fixed slots of the per-rank figures vector; then 8 per micro-batch (see _Figures.vector).
_FIXED = ("loss", "correct", "count", "compute_s", "recv_wait_s", "send_s", "optimizer_s", "start", "end",
          "err_sq_fwd", "ref_sq_fwd", "out_sq_fwd", "dot_fwd", "err_sq_bwd", "ref_sq_bwd", "out_sq_bwd", "dot_bwd",
          "dense_fwd", "dense_bwd", "cache_bytes")


@dataclass
class StageFigures:
    """What one stage measured in one step (seconds; `start`/`end` are wall-clock stamps)."""

    stage: int
    compute_s: float
    recv_wait_s: float
    send_s: float
    optimizer_s: float
    start: float
    end: float


@dataclass
class DistributedStep(StepResult):
    stages: list[StageFigures] | None = None
    timeline: list[tuple[int, str, int, float, float]] | None = None  # (stage, op, mb, start, end), seconds
    cache_bytes: int = 0  # feedback caches of every stage process (each codec end lives in one of them)


# --------------------------------------------------------------------------- payloads of a carry


def encode_carry(channel: Channel | None, carry: Any, microbatch: int, keys: Any, measure_error: bool) -> bytes:
    """A stage's output (or input gradients) as one message: codec payloads for floating tensors (raw
    when `channel` is dense or None), raw bytes for the rest, None for a missing gradient."""
    items = carry if isinstance(carry, tuple | list) else (carry,)
    payloads: list[bytes | None] = []
    for t in items:
        if t is None:
            payloads.append(None)
        elif channel is None or channel.dense or not t.is_floating_point():
            payloads.append(RawCodec().encode(t))
        else:
            payload = channel.sender.encode(t.detach(), keys if channel.uses_keys else None)
            if measure_error and not channel.uses_keys:
                from worker.codecs import decode

                channel.record_error(t.detach().float(), decode(payload, device=t.device).float())
            payloads.append(payload)
    message = pack(payloads)
    if channel is not None:
        channel.add_transfer(microbatch, len(message),
                             sum(t.numel() * 4 for t in items if t is not None and t.is_floating_point()))
    return message


def decode_carry(channel: Channel | None, message: memoryview, device: torch.device) -> Any:
    items: list[torch.Tensor | None] = []
    for payload in unpack(message):
        if payload is None:
            items.append(None)
        elif bytes(payload[:4]) == _RAW_MAGIC:
            items.append(RawCodec.decode(payload).to(device))  # type: ignore[arg-type]  # reads a memoryview as well
        else:
            if channel is None or channel.receiver is None:
                raise ValueError("a compressed payload arrived on a dense channel: the stages disagree on the spec")
            items.append(channel.receiver.decode(payload, device=device))
    return items[0] if len(items) == 1 else tuple(items)


# --------------------------------------------------------------------------- one rank's program


class StageProgram:
    """Rank `rank`'s stage, its optimizer and its channel ends; runs steps, evaluations and checkpoints."""

    def __init__(self, exp: Any, rank: int, world: int, *, control: Any = None, measure_error_every: int = 0):
        from worker.train import make_optimizer

        if len(exp.stages) != world:
            raise ValueError(f"the spec cuts the model into {len(exp.stages)} stages but {world} ranks were started")
        self.exp, self.rank, self.world, self.control = exp, rank, world, control
        self.spec = exp.spec
        self.device = exp.device
        self.stage = exp.stages[rank]
        self.optimizer = make_optimizer(self.stage, self.spec.optim)
        self.m = self.spec.pipeline.microbatches
        self.order = [(a.op, a.microbatch) for a in sorted(exp.runner.actions) if a.stage == rank]
        self.first, self.last = rank == 0, rank == world - 1
        self.measure_error_every = measure_error_every
        self.prev: Boundary | None = None if self.first else exp.boundaries[rank - 1]
        self.next: Boundary | None = None if self.last else exp.boundaries[rank]
        self.eval_prev: Boundary | None = None if self.first else exp.eval_boundaries[rank - 1]
        self.eval_next: Boundary | None = None if self.last else exp.eval_boundaries[rank]
        link, seed = self.spec.link, self.spec.train.seed

        def emulated(boundary: int, direction: int) -> EmulatedLink | None:
            if not link.emulate:
                return None
            return EmulatedLink(link.bandwidth_mbps, link.latency_ms, link.jitter_ms, seed=seed * 1009 + 2 * boundary + direction)

        self.fwd_in = None if self.first else Inbox(rank - 1, name=f"fwd-in-{rank}")
        self.bwd_out = None if self.first else Outbox(rank - 1, link=emulated(rank - 1, 1), name=f"bwd-out-{rank}")
        self.fwd_out = None if self.last else Outbox(rank + 1, link=emulated(rank, 0), name=f"fwd-out-{rank}")
        self.bwd_in = None if self.last else Inbox(rank + 1, name=f"bwd-in-{rank}")
        self.autocast_dtype = exp.runner.autocast_dtype
        self.loss_fn = exp.runner.loss_fn

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _send_s(self) -> float:
        return sum(o.send_s for o in (self.fwd_out, self.bwd_out) if o is not None)

    def _wait_s(self) -> float:
        return sum(i.wait_s for i in (self.fwd_in, self.bwd_in) if i is not None)

    # ---- one training step: this rank's row of the schedule, then its optimizer

    def train_step(self, step: int, lr: float) -> list[float]:
        t_start, wall_start = time.perf_counter(), time.time()
        send0, wait0 = self._send_s(), self._wait_s()
        x, y, ids = self.exp.get_batch(step, inputs=self.first)
        xs = scatter(x, self.m) if self.first else None
        ys = list(torch.tensor_split(y, self.m))
        ks = list(torch.tensor_split(ids, self.m))
        weights = loss_weights([len(t) for t in ys])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        for b in (self.prev, self.next):
            if b is not None:
                b.reset_stats()
                b.set_train_step(step)  # warm-up follows training steps
        measure = self.measure_error_every > 0 and step % self.measure_error_every == 0
        if self.fwd_in is not None:
            self.fwd_in.expect(self.m)
        if self.bwd_in is not None:
            self.bwd_in.expect(self.m)

        inputs: dict[int, Any] = {}
        outputs: dict[int, Any] = {}
        losses: dict[int, torch.Tensor] = {}
        loss_sum, correct = 0.0, 0
        per_action: dict[tuple[str, int], tuple[float, float, float]] = {}  # -> (compute, start, end)
        for op, i in self.order:
            a0, wait_before = time.perf_counter(), self._wait_s()
            if op == FORWARD:
                if self.first:
                    inp = xs[i]  # type: ignore[index]
                else:
                    inp = _leaf(decode_carry(self.prev.forward, self.fwd_in.take(), self.device))  # type: ignore[union-attr]
                    inputs[i] = inp
                with self._autocast():
                    out = self.stage(inp)
                if self.last:
                    logits = _full(out)
                    loss = self.loss_fn(logits, ys[i]) * weights[i]
                    losses[i] = loss
                    loss_sum += float(loss.detach())
                    correct += int((logits.detach().argmax(-1) == ys[i]).sum())
                else:
                    outputs[i] = out
                    self.fwd_out.put(encode_carry(self.next.forward, out, i, ks[i], measure))  # type: ignore[union-attr]
            else:
                if self.last:
                    loss = losses.pop(i)
                    _backward((loss,), (torch.ones_like(loss),))
                else:
                    grads = decode_carry(self.next.backward, self.bwd_in.take(), self.device)  # type: ignore[union-attr]
                    grads = grads if isinstance(grads, tuple) else (grads,)
                    out = outputs.pop(i)
                    outs = out if isinstance(out, tuple) else (out,)
                    pairs = [(t, g) for t, g in zip(outs, grads, strict=True) if g is not None and t.requires_grad]
                    if pairs:
                        _backward(tuple(t for t, _ in pairs), tuple(g for _, g in pairs))  # the engine casts dtypes
                if not self.first:
                    carry = inputs.pop(i)
                    items = carry if isinstance(carry, tuple) else (carry,)
                    grads_in = tuple(t.grad if t.is_floating_point() else None for t in items)
                    self.bwd_out.put(encode_carry(self.prev.backward, grads_in, i, ks[i], measure))  # type: ignore[union-attr]
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            compute = time.perf_counter() - a0 - (self._wait_s() - wait_before)
            ended = time.time()
            per_action[(op, i)] = (compute, ended - compute, ended)  # started once its input had arrived
        o0 = time.perf_counter()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        optimizer_s = time.perf_counter() - o0
        compute_s = sum(c for c, _, _ in per_action.values())
        fwd = self.next.forward.stats if self.next is not None else ChannelStats()
        bwd = self.prev.backward.stats if self.prev is not None else ChannelStats()
        fixed = {
            "loss": loss_sum, "correct": correct, "count": len(y) if self.last else 0,
            "compute_s": compute_s, "recv_wait_s": self._wait_s() - wait0, "send_s": self._send_s() - send0,
            "optimizer_s": optimizer_s, "start": wall_start, "end": wall_start + time.perf_counter() - t_start,
            "err_sq_fwd": fwd.err_sq, "ref_sq_fwd": fwd.ref_sq, "out_sq_fwd": fwd.out_sq, "dot_fwd": fwd.dot,
            "err_sq_bwd": bwd.err_sq, "ref_sq_bwd": bwd.ref_sq, "out_sq_bwd": bwd.out_sq, "dot_bwd": bwd.dot,
            "dense_fwd": fwd.dense_bytes, "dense_bwd": bwd.dense_bytes,
            "cache_bytes": sum(b.cache_bytes for b in (self.prev, self.next) if b is not None),
        }
        vector = [float(fixed[k]) for k in _FIXED]
        fwd_bytes, bwd_bytes = [0.0] * self.m, [0.0] * self.m
        for mb, nbytes in fwd.transfers:
            fwd_bytes[mb] += nbytes
        for mb, nbytes in bwd.transfers:
            bwd_bytes[mb] += nbytes
        for op in (FORWARD, BACKWARD):
            vector += [per_action.get((op, i), (math.nan, 0.0, 0.0))[0] for i in range(self.m)]
            vector += [per_action.get((op, i), (0.0, math.nan, 0.0))[1] for i in range(self.m)]
            vector += [per_action.get((op, i), (0.0, 0.0, math.nan))[2] for i in range(self.m)]
        return vector + fwd_bytes + bwd_bytes

    # ---- evaluation: the validation batches streamed through the stages

    @torch.no_grad()
    def evaluate(self, compressed: bool, limit: int = 0, batch_size: int = 0) -> list[float]:
        """[loss sum, correct, count, gap s] over the validation split (its first `limit` batches if limit > 0,
        in batches of `batch_size` if > 0, else data.eval_batch);
        gap: on the last stage, the seconds between its last two batches' ends (a batch's time once the
        pipeline is full), else NaN."""
        from worker.zoo.data import batches, count_batches

        boundaries = [b for b in (self.eval_prev, self.eval_next) if b is not None]
        for b in boundaries:
            b.reset_codecs()
        size = batch_size or self.spec.data.eval_batch
        n = count_batches(self.exp.data.val, size)
        n = min(n, limit) if limit > 0 else n
        val = itertools.islice(batches(self.exp.data.val, size, shuffle=False, inputs=self.first), n)
        if self.fwd_in is not None:
            self.fwd_in.expect(n)
        self.stage.eval()
        loss_sum, correct, count = 0.0, 0, 0
        prev_ch = self.eval_prev.forward if compressed and self.eval_prev is not None else None
        next_ch = self.eval_next.forward if compressed and self.eval_next is not None else None
        ends: list[float] = []
        for x, y, ids in val:
            keys = -1 - ids
            inp = self.exp._inputs(x) if self.first else decode_carry(prev_ch, self.fwd_in.take(), self.device)  # type: ignore[union-attr]
            with self._autocast():
                out = self.stage(inp)
            if self.last:
                logits, y = _full(out), y.to(self.device)
                loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(-1) == y).sum())
                count += len(y)
                ends.append(time.perf_counter())  # float() above waited for the device
            else:
                self.fwd_out.put(encode_carry(next_ch, out, 0, keys, False))  # type: ignore[union-attr]
        for b in boundaries:
            b.reset_stats()
        self.stage.train()
        return [loss_sum, float(correct), float(count), ends[-1] - ends[-2] if len(ends) > 1 else math.nan]

    # ---- initial weights: rank 0 built the model; every other rank built its shapes only (worker.stage)

    def send_weights(self) -> int:
        """Rank 0: every other rank's stage as rank 0 built it (seeded init or pretrained weights), one
        tensor at a time on the control group, before the first command; returns the bytes sent."""
        sent = 0
        for rank in range(1, self.world):
            tensors = stage_tensors(self.exp.stages[rank])
            listing = [[name, str(t.dtype).removeprefix("torch."), list(t.shape)] for name, t in tensors]
            blob = torch.frombuffer(bytearray(json.dumps(listing).encode()), dtype=torch.uint8)
            dist.send(torch.tensor([blob.numel()]), dst=rank, group=self.control)
            dist.send(blob, dst=rank, group=self.control)
            for _, t in tensors:
                if t.numel():
                    dist.send(_bytes_view(t.detach().cpu().contiguous()), dst=rank, group=self.control)
                    sent += t.numel() * t.element_size()
        return sent

    def receive_weights(self) -> None:
        """Ranks > 0: rank 0's weights for this stage, put on this rank's device (and in float64 for fp64
        runs, as Module.to casts) in place of the meta tensors, so the optimizer keeps the same objects."""
        size = torch.zeros(1, dtype=torch.int64)
        dist.recv(size, src=0, group=self.control)
        if not 0 < int(size) <= MAX_MANIFEST_BYTES:
            raise ValueError(f"rank 0 announced a tensor listing of {int(size)} bytes; a stage's is a few kB")
        blob = torch.empty(int(size), dtype=torch.uint8)
        dist.recv(blob, src=0, group=self.control)
        manifest = read_manifest(bytes(blob.numpy()))
        mine = stage_tensors(self.stage)
        check_manifest(self.rank, mine, manifest)
        for (_, old), (_, dtype, shape) in zip(mine, manifest, strict=True):
            value = torch.empty(shape, dtype=dtype)
            if value.numel():
                dist.recv(_bytes_view(value), src=0, group=self.control)
            cast = self.exp.dtype if self.exp.dtype is not None and value.is_floating_point() else value.dtype
            value = value.to(self.device, cast)
            new = torch.nn.Parameter(value, old.requires_grad) if isinstance(old, torch.nn.Parameter) else value
            torch.utils.swap_tensors(old, new)

    # ---- checkpoints: each rank keeps its own stage's state

    def checkpoint_path(self, directory: Path) -> Path:
        return directory / f"checkpoint.stage{self.rank}.pt"

    def save(self, directory: Path, step: int) -> None:
        state = {
            "step": step,
            "stage": self.stage.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "codecs": [b.codec_state() if b is not None else {} for b in (self.prev, self.next)],
            "torch_rng": torch.get_rng_state(),
        }
        path = self.checkpoint_path(directory)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)

    def load(self, directory: Path) -> int:
        state = torch.load(self.checkpoint_path(directory), map_location=self.device, weights_only=True)
        self.stage.load_state_dict(state["stage"])
        self.optimizer.load_state_dict(state["optimizer"])
        for b, codec_state in zip((self.prev, self.next), state["codecs"], strict=True):
            if b is not None:
                b.load_codec_state(codec_state)
        torch.set_rng_state(state["torch_rng"])
        return int(state["step"])

    # ---- the command loop of ranks > 0, and the collectives every rank takes part in

    def command(self, kind: int = 0, step: int = 0, value: float = 0.0) -> tuple[int, int, float]:
        """Rank 0 sends (kind, step, value); every other rank receives it."""
        message = torch.tensor([float(kind), float(step), value], dtype=torch.float64)
        dist.broadcast(message, src=0, group=self.control)
        return int(message[0]), int(message[1]), float(message[2])

    def gather(self, figures: Sequence[float]) -> list[torch.Tensor] | None:
        mine = torch.tensor(list(figures), dtype=torch.float64)
        out = [torch.empty_like(mine) for _ in range(self.world)] if self.rank == 0 else None
        dist.gather(mine, out, dst=0, group=self.control)
        return out

    def serve(self, directory: Path | None) -> None:
        """Ranks > 0: run what rank 0 asks until it says stop."""
        while True:
            kind, step, value = self.command()
            if kind == STOP:
                break
            if kind == TRAIN:
                self.gather(self.train_step(step, value))
            elif kind in (EVAL_COMPRESSED, EVAL_DENSE):
                self.gather(self.evaluate(kind == EVAL_COMPRESSED, limit=step, batch_size=int(value)))
            elif kind == SAVE and directory is not None:
                self.save(directory, step)
                self.gather([0.0])
            elif kind == LOAD and directory is not None:
                self.gather([float(self.load(directory))])
        self.close()

    def close(self, flush: bool = True) -> None:
        for box in (self.fwd_out, self.bwd_out):
            if box is not None:
                if flush:
                    box.flush()
                box.close(wait=flush)
        for inbox in (self.fwd_in, self.bwd_in):
            if inbox is not None:
                inbox.close()


def stage_tensors(stage: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """A stage's parameters, then its buffers (non-persistent ones too: they are built, not saved), each once."""
    return [*stage.named_parameters(), *stage.named_buffers()]


def read_manifest(blob: bytes) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """[(name, dtype, shape)] from rank 0's JSON listing (JSON, not pickle: nothing a peer sends runs here)."""
    manifest = []
    for name, dtype_name, shape in json.loads(blob):
        dtype = getattr(torch, str(dtype_name), None)
        if (not isinstance(dtype, torch.dtype) or not isinstance(shape, list)
                or not all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ValueError(f"rank 0 sent {name!r} as {dtype_name} {shape}, not a tensor this stage can take")
        manifest.append((str(name), dtype, tuple(shape)))
    return manifest


def check_manifest(rank: int, mine: list[tuple[str, torch.Tensor]],
                   manifest: list[tuple[str, torch.dtype, tuple[int, ...]]]) -> None:
    """Rank `rank`'s stage tensors against the names and shapes rank 0 is about to send for it."""
    if [(name, tuple(t.shape)) for name, t in mine] == [(name, shape) for name, _, shape in manifest]:
        return
    theirs = {name: shape for name, _, shape in manifest}
    ours = {name: tuple(t.shape) for name, t in mine}
    differ = sorted(n for n in theirs.keys() | ours.keys() if theirs.get(n) != ours.get(n))
    what = f"{', '.join(differ[:4])} differ" if differ else "the same tensors in another order"
    raise ValueError(f"stage {rank} and rank 0 built different modules ({what}): every worker of a distributed "
                     "run needs the same model files and library versions")


def _bytes_view(t: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor's storage as flat bytes (gloo sends any dtype, bool included, this way)."""
    return t.reshape(-1).view(torch.uint8)


# --------------------------------------------------------------------------- rank 0's view


def step_result(vectors: list[torch.Tensor], m: int) -> tuple[DistributedStep, list[tuple[ChannelStats, ChannelStats]]]:
    """Rank 0 turns the gathered vectors into the in-process runner's StepResult and wire stats."""
    n, k = len(vectors), len(_FIXED)
    rows = [dict(zip(_FIXED, v[:k].tolist(), strict=True)) for v in vectors]
    t0 = min(r["start"] for r in rows)
    compute: dict[tuple[int, str, int], float] = {}
    timeline: list[tuple[int, str, int, float, float]] = []
    for j, v in enumerate(vectors):
        rest = v[k:].tolist()
        for o, op in enumerate((FORWARD, BACKWARD)):
            times, starts, ends = (rest[(3 * o + s) * m : (3 * o + s + 1) * m] for s in range(3))
            for i in range(m):
                if not math.isnan(times[i]):
                    compute[(j, op, i)] = times[i]
                    timeline.append((j, op, i, starts[i] - t0, ends[i] - t0))
    wire: list[tuple[ChannelStats, ChannelStats]] = []
    for j in range(n - 1):
        fwd_v, bwd_v = vectors[j][k + 6 * m : k + 7 * m].tolist(), vectors[j + 1][k + 7 * m : k + 8 * m].tolist()
        fwd = _channel_stats(rows[j], "fwd", fwd_v)
        bwd = _channel_stats(rows[j + 1], "bwd", bwd_v)
        wire.append((fwd, bwd))
    last = rows[-1]
    stages = [
        StageFigures(j, r["compute_s"], r["recv_wait_s"], r["send_s"], r["optimizer_s"], r["start"] - t0, r["end"] - t0)
        for j, r in enumerate(rows)
    ]
    result = DistributedStep(loss=last["loss"], correct=int(last["correct"]), count=int(last["count"]),
                             compute_s=compute, stages=stages, timeline=sorted(timeline, key=lambda e: e[3]),
                             cache_bytes=int(sum(r["cache_bytes"] for r in rows)))
    return result, wire


def _channel_stats(row: dict[str, float], direction: str, per_microbatch: list[float]) -> ChannelStats:
    return ChannelStats(
        wire_bytes=int(sum(per_microbatch)), dense_bytes=int(row[f"dense_{direction}"]),
        err_sq=row[f"err_sq_{direction}"], ref_sq=row[f"ref_sq_{direction}"], out_sq=row[f"out_sq_{direction}"],
        dot=row[f"dot_{direction}"], transfers=[(i, int(b)) for i, b in enumerate(per_microbatch)],
    )


def bubble_fraction(stages: Sequence[StageFigures], batch_s: float) -> float:
    """Share of the stages' time in a step spent not computing: 1 - mean compute / time per batch."""
    if batch_s <= 0 or not stages:
        return 0.0
    busy = sum(s.compute_s + s.optimizer_s for s in stages) / len(stages)
    return max(0.0, 1.0 - busy / batch_s)


def gpipe_bubble(n_stages: int, microbatches: int) -> float:
    """GPipe's ideal bubble with equal stages and free links: (p-1)/(m+p-1)."""
    return (n_stages - 1) / (microbatches + n_stages - 1)

