"""A stage process of a distributed run: `python -m worker.stage SPEC_JSON RANK WORLD HOST PORT [OUT_DIR]`.

Started by rank 0 on the same host (worker.pipeline.launch) or by a stage task on another worker; builds
the experiment on the meta device (shapes, no weights), joins the rendezvous, receives its stage's weights
from rank 0 onto its device and serves rank 0's commands until told to stop.
"""

from __future__ import annotations

import sys
from typing import Any


def build(spec_data: dict[str, Any], rank: int, world: int) -> Any:
    from slimpipe.spec import parse_spec
    from worker.memory import keep_freed_memory
    from worker.pipeline.distributed import StageProgram
    from worker.train import Experiment, measure_error_every, stage_device

    keep_freed_memory()
    spec = parse_spec(spec_data)
    exp = Experiment(spec, device=stage_device(spec.train.device, rank), only_stage=rank, on_meta=True)
    return StageProgram(exp, rank, world, measure_error_every=measure_error_every(spec))


def main(argv: list[str] | None = None) -> int:
    from worker.pipeline.launch import stage_main

    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (5, 6):
        print("usage: python -m worker.stage SPEC_JSON RANK WORLD HOST PORT [OUT_DIR]", file=sys.stderr)
        return 2
    return stage_main(args, build)


if __name__ == "__main__":
    sys.exit(main())
