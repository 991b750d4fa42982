"""A run's diagnosis from its metric series: where compression error enters, train/val divergence,
dense vs compressed evaluation mismatch, and the likely cause in plain words. Pure: series in, dict out."""

from __future__ import annotations

import re
from statistics import fmean
from typing import Any

from slimpipe import names

CHANNEL = re.compile(r"^wire/b(\d+)/(err|cos)_(fwd|bwd)$")
LATE = 0.2  # boundary figures average the last fifth of the run, after any warm-up
MISMATCH_POINTS = 2.0  # |compressed - dense| val accuracy that counts as a train/eval mismatch
GAP_POINTS = 10.0  # train - val accuracy that counts as divergence
DROP_POINTS = 3.0  # val accuracy lost since its best that counts as divergence
BAD_COSINE = 0.9  # boundary gradients pointing elsewhere than the dense ones
BAD_ERROR = 0.5  # relative L2 error of a boundary tensor

Series = dict[str, tuple[list[int], list[float | None]]]


def _late_mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    if not kept:
        return None
    return fmean(kept[int(len(kept) * (1 - LATE)) :] or kept[-1:])


def _last(series: Series, name: str) -> float | None:
    values = [v for v in series.get(name, ([], []))[1] if v is not None]
    return values[-1] if values else None


def channels(series: Series) -> list[dict[str, Any]]:
    """Per boundary and direction: late-run relative error and cosine to the dense tensor."""
    found: dict[tuple[int, str], dict[str, Any]] = {}
    for name, (_, values) in series.items():
        match = CHANNEL.match(name)
        if match:
            index, what, direction = int(match[1]), match[2], "forward" if match[3] == "fwd" else "backward"
            entry = found.setdefault((index, direction), {"boundary": index, "direction": direction})
            entry["rel_error" if what == "err" else "cosine"] = _late_mean(values)
    return [found[key] for key in sorted(found)]


def diagnose(series: Series) -> dict[str, Any]:
    entries = channels(series)
    compressed = [e for e in entries if (e.get("rel_error") or 0.0) > 0.0]
    ratio = _late_mean(series.get(names.WIRE_RATIO, ([], []))[1])
    sends_fewer_bytes = ratio is not None and ratio > 1.0 + 1e-9
    worst = max(compressed, key=lambda e: e.get("rel_error") or 0.0, default=None)
    worst_grad = min((e for e in compressed if e["direction"] == "backward" and e.get("cosine") is not None),
                     key=lambda e: e["cosine"], default=None)
    val_accs = [v for v in series.get(names.VAL_ACC, ([], []))[1] if v is not None]
    val_acc, best_val = (val_accs[-1], max(val_accs)) if val_accs else (None, None)
    train_acc = _late_mean(series.get(names.TRAIN_ACC, ([], []))[1])
    dense_acc = _last(series, names.VAL_ACC_DENSE)
    gap = None if train_acc is None or val_acc is None else train_acc - val_acc
    mismatch = None if val_acc is None or dense_acc is None else val_acc - dense_acc
    diverging = gap is not None and best_val is not None and val_acc is not None and (
        gap > GAP_POINTS and best_val - val_acc > DROP_POINTS
    )
    findings: list[str] = []
    if worst is not None:
        findings.append(
            f"most error enters at boundary {worst['boundary']} {worst['direction']}: relative error "
            f"{worst['rel_error']:.2f}" + ("" if worst.get("cosine") is None else f", cosine {worst['cosine']:.3f}")
        )
    if worst_grad is not None:
        findings.append(f"gradients agree least at boundary {worst_grad['boundary']}: cosine to the dense gradient "
                        f"{worst_grad['cosine']:.3f}")
    if gap is not None:
        findings.append(f"train accuracy {train_acc:.1f}% vs val {val_acc:.1f}% (gap {gap:+.1f} points, "
                        f"best val {best_val:.1f}%)")
    if mismatch is not None:
        findings.append(f"val accuracy through the compressed boundaries {val_acc:.1f}% vs the dense model "
                        f"{dense_acc:.1f}% ({mismatch:+.1f} points)")
    return {
        "channels": entries,
        "worst": worst,
        "train_acc": train_acc,
        "val_acc": val_acc,
        "best_val_acc": best_val,
        "val_acc_dense": dense_acc,
        "train_val_gap": gap,
        "diverging": diverging,
        "eval_mismatch": mismatch,
        "findings": findings,
        "likely_cause": likely_cause(compressed, worst, worst_grad, mismatch, diverging, val_acc, best_val,
                                     sends_fewer_bytes),
    }


def likely_cause(compressed, worst, worst_grad, mismatch, diverging, val_acc, best_val,
                 sends_fewer_bytes: bool = False) -> str:
    if val_acc is None:
        return "no validation yet: the diagnosis needs at least one evaluation (train.eval_every)"
    if not compressed and not sends_fewer_bytes:
        return "no boundary is compressed, so compression cannot be the cause of what this run shows"
    if mismatch is not None and abs(mismatch) > MISMATCH_POINTS:
        return (f"train/eval mismatch: the model scores {abs(mismatch):.1f} points "
                f"{'higher' if mismatch > 0 else 'lower'} through the compressed boundaries than dense; it has "
                "adapted to the compression, so evaluate (and deploy) it the way it was trained")
    if worst_grad is not None and worst_grad["cosine"] < BAD_COSINE:
        return (f"boundary {worst_grad['boundary']}'s compressed gradients point away from the dense ones "
                f"(cosine {worst_grad['cosine']:.2f}): the earlier stages learn from a biased signal; give the "
                "backward direction more bits or a higher keep ratio, or use stochastic rounding / topk_mode: random")
    if worst is not None and worst["rel_error"] > BAD_ERROR:
        return (f"boundary {worst['boundary']} {worst['direction']} loses most of the tensor (relative error "
                f"{worst['rel_error']:.2f}); use more bits, block scales, feedback: delta for activations, "
                "or a preset")
    if diverging:
        return (f"validation falls ({best_val:.1f}% at best, {val_acc:.1f}% now) while training fits: overfitting "
                "or a noisy late phase; shorten the run or lower the learning rate")
    if not compressed:
        return ("the run sends fewer bytes than fp32 but recorded no boundary error (the distributed runner does not "
                "measure feedback codecs'), and the evaluations agree: compare it with a dense run")
    return "no compression problem found: boundary errors are small and the evaluations agree"
