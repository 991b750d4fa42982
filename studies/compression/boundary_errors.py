"""Screen codecs in seconds: their bytes and errors on a study task's real boundary tensors, no training.

    python studies/compression/boundary_errors.py --task minilm --direction backward
    python studies/compression/boundary_errors.py --task cnn --direction forward \
        --codec 'b4-channel={"bits": 4, "scale": "channel", "entropy": "ans"}'
    python studies/compression/boundary_errors.py --task minilm --weights \
        --codec 'steps1={"forward": {"bits": 8, "scale": "tensor", "step_std": 1, "entropy": "ans"}, "backward": ...}'

Builds the task's model and data as a run would (same seed, same batches), walks `--steps` training
batches through the stages in micro-batches with every boundary dense, back-propagates stage by stage
as the pipeline does, and keeps what crosses each boundary: the activations (forward) and the gradients
of the loss with respect to them (backward). Each codec then encodes and decodes every kept tensor and
the table gives, per boundary, the relative L2 error |decoded - x| / |x| and the cosine of decoded and
x, and the wire ratio (fp32 bytes / payload bytes) over all of them. The weights do not train, so the
tensors are those of the run's first steps; a codec's error predicts, it does not replace, a run.

`--weights` screens forward + backward configs by what the optimizer sees: each stage's parameter
gradient with every boundary compressed (each error carried through the stages upstream, as in a run)
against the dense one, as a cosine per stage. A boundary tensor's error is a poor guide for gradients:
on MiniLM the classifier token's row holds 48 % and 91 % of the energy of the gradients into layers
0-1 and 2-3, so steps of 3 standard deviations keep it and zero most of the other 63 rows, on which the
first three stages' weight gradients depend (zeroing those rows alone leaves them at cosine 0.06-0.47).

`--reference` adds, under each codec, the error of a reference quantizer at the codec's own bits per
value: one uniform step per tensor (the same multiple of every tensor's standard deviation) around its
mean, symbols counted at their empirical entropy, side information free: what entropy-coded uniform
quantization, the best scalar quantizer at high rates, does with nothing known about the tensor. A
reference, not a bound: a codec that errs more at the same bits puts its levels where the values are
not (min..max levels stretched by heavy tails); one that errs less uses structure one step cannot see
(a ReLU's exact zeros, channels of very different scales).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

HERE = Path(__file__).resolve().parent
TASKS = {"cnn": HERE / "cnn.yaml", "minilm": HERE / "minilm.yaml"}
# The presets' halves and what they were measured against (2026-12-01).
CODECS: dict[str, dict[str, dict[str, Any]]] = {
    "forward": {
        "b4-tensor": {"bits": 4, "scale": "tensor"},
        "b4-channel": {"bits": 4, "scale": "channel", "entropy": "ans"},
        "b3-channel": {"bits": 3, "scale": "channel", "entropy": "ans"},
        "b2-channel": {"bits": 2, "scale": "channel", "entropy": "ans"},
        "b3-block256-sr": {"bits": 3, "block": 256, "rounding": "stochastic", "entropy": "ans"},
        "topk0.1": {"topk": 0.1},
    },
    "backward": {
        "b4-tensor": {"bits": 4, "scale": "tensor"},
        "b4-block256-sr": {"bits": 4, "block": 256, "rounding": "stochastic", "entropy": "ans"},
        "b3-block256-sr": {"bits": 3, "block": 256, "rounding": "stochastic", "entropy": "ans"},
        "b3-block128-nearest": {"bits": 3, "block": 128, "entropy": "ans"},
        "b3-channel": {"bits": 3, "scale": "channel", "entropy": "ans"},
        "topk0.3-b4-block64-sr": {"topk": 0.3, "bits": 4, "block": 64, "rounding": "stochastic", "entropy": "ans"},
        "topk0.4-b4-block128-sr": {"topk": 0.4, "bits": 4, "block": 128, "rounding": "stochastic", "entropy": "ans"},
        "b2-block256-sr": {"bits": 2, "block": 256, "rounding": "stochastic", "entropy": "ans"},
        "topk0.1": {"topk": 0.1},
    },
}


def _experiment(task: str, data_root: Path):
    from slimpipe.spec import load_spec_text, parse_spec
    from worker.train import Experiment

    data = load_spec_text(TASKS[task].read_text())
    if task == "minilm":
        news = data_root.resolve() / "news"
        if not (news / "train.csv").exists():
            raise SystemExit(f"{news}/train.csv is missing: run run.py for the minilm task once (it writes the CSVs)")
        data["data"]["options"] = {"train": str(news / "train.csv"), "val": str(news / "val.csv")}
    return Experiment(parse_spec(data))


class Wire:
    """One codec per boundary for a direction (None: dense), and the bytes it sent against fp32's."""

    def __init__(self, codec: dict[str, Any] | None, seed: int):
        if codec and codec.get("feedback"):
            raise SystemExit(f"codec {codec}: feedback is not screened here (it needs sample keys); measure it with a run")
        self.codec, self.seed, self.codecs = codec, seed, {}
        self.payload_bytes = self.dense_bytes = 0

    def __call__(self, j: int, x: Any) -> Any:
        self.dense_bytes += x.numel() * 4
        if self.codec is None:
            self.payload_bytes += x.numel() * 4
            return x
        from worker.codecs import make_codec

        if j not in self.codecs:
            self.codecs[j] = make_codec(self.codec, seed=self.seed + j)
        payload = self.codecs[j].encode(x)
        self.payload_bytes += len(payload)
        return self.codecs[j].decode(payload).to(x.dtype)

    @property
    def ratio(self) -> float:
        return self.dense_bytes / self.payload_bytes if self.payload_bytes else 1.0


def walk(exp: Any, x: Any, y: Any, forward: Wire, backward: Wire, kept: dict[str, list] | None = None) -> None:
    """One batch through the stages in micro-batches as the pipeline runs it: each boundary's floating
    tensors pass `forward` on the way down, their gradients `backward` on the way up, stage by stage.
    Leaves the batch's parameter gradients summed in the model; `kept` gets what crossed (dense)."""
    import torch

    from worker.pipeline.microbatch import scatter
    from worker.pipeline.runner import _full

    chunks = exp.spec.pipeline.microbatches
    for xm, ym in zip(scatter(x, chunks), torch.tensor_split(y, chunks), strict=True):
        carry, sent, received = xm, [], []
        for j, stage in enumerate(exp.stages):
            if j:
                items = carry if isinstance(carry, tuple) else (carry,)
                leaves = tuple((forward(j - 1, t.detach()) if t.is_floating_point() else t.detach())
                               .requires_grad_(t.is_floating_point()) for t in items)
                sent.append(items)
                received.append(leaves)
                carry = leaves if len(leaves) > 1 else leaves[0]
            carry = stage(carry)
        torch.nn.functional.cross_entropy(_full(carry), ym).backward()
        for j in range(len(received) - 1, -1, -1):  # the pipeline's backward, boundary by boundary
            pairs = [(s, r.grad) for s, r in zip(sent[j], received[j], strict=True)
                     if r.grad is not None and s.requires_grad]
            if kept is not None:
                for r in received[j]:
                    if r.is_floating_point() and r.grad is not None:
                        kept["forward"].append((j, r.detach().clone()))
                        kept["backward"].append((j, r.grad.clone()))
            if pairs:  # into stage j's parameters (stage 0's too: the weights screen needs them)
                torch.autograd.backward([s for s, _ in pairs], [backward(j, g) for _, g in pairs])


def boundary_tensors(task: str, data_root: Path, steps: int) -> dict[str, list[tuple[int, Any]]]:
    """(boundary, tensor) pairs of the floating tensors crossing each boundary, per direction."""
    exp = _experiment(task, data_root)
    kept: dict[str, list[tuple[int, Any]]] = {"forward": [], "backward": []}
    for step in range(steps):
        x, y, _ = exp.get_batch(step)
        walk(exp, x, y, Wire(None, 0), Wire(None, 0), kept)
        exp.model.zero_grad(set_to_none=True)
    return kept


def weight_gradients(task: str, data_root: Path, steps: int, configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the optimizer sees: per config ({"forward": codec, "backward": codec}, either may be absent),
    the wire ratio of each direction and, per stage, the median over batches of the cosine between the
    batch's parameter gradient with every boundary compressed (errors chained through the stages, as
    in a run) and the dense one. Dropout is off, so the two differ by the codecs alone."""
    import torch

    exp = _experiment(task, data_root)
    exp.model.eval()
    batches = [exp.get_batch(step)[:2] for step in range(steps)]

    def gradients(forward: Wire, backward: Wire) -> list[list[Any]]:
        out = []
        for x, y in batches:
            walk(exp, x, y, forward, backward)
            out.append([torch.cat([p.grad.flatten() for p in stage.parameters() if p.grad is not None])
                        for stage in exp.stages])
            exp.model.zero_grad(set_to_none=True)
        return out

    dense = gradients(Wire(None, 0), Wire(None, 0))
    results = {}
    for name, config in configs.items():
        forward, backward = Wire(config.get("forward"), 101), Wire(config.get("backward"), 1)
        compressed = gradients(forward, backward)
        cosines = [statistics.median(float(torch.nn.functional.cosine_similarity(d[k], c[k], dim=0))
                                     for d, c in zip(dense, compressed, strict=True)) for k in range(len(exp.stages))]
        total = (forward.dense_bytes + backward.dense_bytes) / (forward.payload_bytes + backward.payload_bytes)
        results[name] = {"forward": forward.ratio, "backward": backward.ratio, "ratio": total, "cosines": cosines}
    return results


def measure(codec: dict[str, Any], tensors: list[tuple[int, Any]]) -> tuple[float, dict[int, tuple[float, float]]]:
    """Wire ratio over all tensors, and per boundary the median relative error and cosine. One codec per
    boundary, as in a run; per-sample feedback needs the data index, which this screen does not keep."""
    import torch

    wire = Wire(codec, 1)
    per_boundary: dict[int, list[tuple[float, float]]] = {}
    for j, x in tensors:
        decoded = wire(j, x).float()
        norm = float(x.norm())
        err = float((decoded - x).norm()) / norm if norm else 0.0
        cos = float(torch.nn.functional.cosine_similarity(decoded.flatten(), x.flatten(), dim=0)) if norm else 1.0
        per_boundary.setdefault(j, []).append((err, cos))
    summary = {j: (statistics.median(e for e, _ in v), statistics.median(c for _, c in v)) for j, v in per_boundary.items()}
    return wire.ratio, summary


def _uniform_step(x, c: float) -> tuple[float, float]:
    """(bits, relative error) of `x` (float64) quantized with a step of c standard deviations around its mean."""
    import torch

    from worker.codecs.entropy import empirical_entropy_bits

    centred = x - x.mean()
    step = c * float(centred.std()) or 1.0
    q = torch.round(centred / step)
    bits = empirical_entropy_bits((q - q.min()).to(torch.int64).numpy())
    norm = float(x.norm())
    return bits, (float((q * step - centred).norm()) / norm if norm else 0.0)


def reference(tensors: list[tuple[int, Any]], bits_per_value: float, iterations: int = 40) -> tuple[float, dict[int, float]]:
    """The reference quantizer (see the module text) at `bits_per_value` over all tensors: (bits per value
    reached, median relative error per boundary). Bisects the step multiple on a log scale."""
    wide = [(j, x.double()) for j, x in tensors]
    count = sum(x.numel() for _, x in wide)

    def at(c: float) -> tuple[float, dict[int, list[float]]]:
        total, errors = 0.0, {}
        for j, x in wide:
            bits, err = _uniform_step(x, c)
            total += bits
            errors.setdefault(j, []).append(err)
        return total / count, errors

    lo, hi = 1e-3, 1e3  # step multiples: fine steps spend more bits
    for _ in range(iterations):
        mid = (lo * hi) ** 0.5
        if at(mid)[0] > bits_per_value:
            lo = mid
        else:
            hi = mid
    bits, errors = at(hi)
    return bits, {j: statistics.median(v) for j, v in errors.items()}


def print_weights(results: dict[str, Any], task: str, steps: int) -> int:
    stages = len(next(iter(results.values()))["cosines"]) if results else 0
    print(f"{task}: {steps} batches; per stage, the median cosine of its parameter gradient with the dense one")
    print(f"{'config':30} {'fwd':>6} {'bwd':>6} {'both':>6}  " + " ".join(f"{f'stage {k}':>8}" for k in range(stages)))
    for name, r in results.items():
        print(f"{name:30} {r['forward']:6.1f} {r['backward']:6.1f} {r['ratio']:6.1f}  "
              + " ".join(f"{c:8.3f}" for c in r["cosines"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="minilm")
    parser.add_argument("--direction", choices=["forward", "backward"], default="backward")
    parser.add_argument("--steps", type=int, default=2, help="training batches to walk (each in micro-batches)")
    parser.add_argument("--data-root", type=Path, default=ROOT / "var" / "study" / "data")
    parser.add_argument("--codec", action="append", default=[], metavar='NAME={"bits": 3, ...}',
                        help="a codec to measure (repeatable); default: the built-in list for the direction")
    parser.add_argument("--weights", action="store_true",
                        help="screen forward+backward configs by each stage's parameter-gradient cosine; --codec "
                        'NAME={"forward": {...}, "backward": {...}} (default: the presets)')
    parser.add_argument("--reference", action="store_true",
                        help="under each codec, the reference uniform quantizer's error at the codec's bits per value")
    args = parser.parse_args(argv)
    if args.weights:
        from slimpipe.presets import COMPRESSION_PRESETS

        codecs = dict(COMPRESSION_PRESETS)
    else:
        codecs = dict(CODECS[args.direction])
    if args.codec:
        codecs = {}
        for item in args.codec:
            name, sep, text = item.partition("=")
            if not sep:
                parser.error(f"--codec {item!r}: write NAME={{json}}")
            codecs[name] = json.loads(text)
    if args.weights:
        return print_weights(weight_gradients(args.task, args.data_root, args.steps, codecs), args.task, args.steps)
    tensors = boundary_tensors(args.task, args.data_root, args.steps)[args.direction]
    boundaries = sorted({j for j, _ in tensors})
    print(f"{args.task}, {args.direction}: {len(tensors)} tensors ({args.steps} batches in micro-batches); "
          "per boundary: relative L2 error / cosine (medians)")
    print(f"{'codec':26} {'ratio':>6}  " + "  ".join(f"{f'boundary {j}':>13}" for j in boundaries))
    for name, codec in codecs.items():
        ratio, summary = measure(codec, tensors)
        print(f"{name:26} {ratio:6.1f}  " + "  ".join(f"{summary[j][0]:6.2f}/{summary[j][1]:.3f}" for j in boundaries))
        if args.reference:
            _, errors = reference(tensors, 32.0 / ratio)
            print(f"{'  uniform step, same bits':26} {ratio:6.1f}  " + "  ".join(f"{errors[j]:6.2f}      " for j in boundaries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
