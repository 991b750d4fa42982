"""Warm-up in training steps: dense fp32 for the first N steps, or a ramp from dense to the target.

The ramp (DGC-style) lowers the keep ratio geometrically, 1 -> topk, and the bit width linearly,
16 -> bits, over `warmup_steps` training steps. Evaluation never warms up (step None).
"""

from __future__ import annotations

from slimpipe.spec import CompressionSpec

RAMP_START_BITS = 16


def spec_at(spec: CompressionSpec, step: int | None) -> CompressionSpec | None:
    """The compression in force at training step `step` (0-based); None means send dense fp32."""
    if step is None or step >= spec.warmup_steps:
        return spec
    if spec.warmup == "dense":
        return None
    done = step / spec.warmup_steps  # 0 at the first step, < 1 throughout the ramp
    update: dict[str, object] = {}
    if spec.topk is not None:
        update["topk"] = spec.topk**done
    if spec.bits is not None:
        bits = round(RAMP_START_BITS - (RAMP_START_BITS - spec.bits) * done)
        update["bits"] = max(bits, spec.bits)
        if bits > spec.bits:
            update["entropy"] = None  # entropy models are sized for the target's alphabet
    return spec.model_copy(update=update)
