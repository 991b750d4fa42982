"""What this worker can build, published to SQL when it starts: `python -m worker.catalog WORKER_NAME`.

Per model: its module tree (`slimpipe.modeltree`), blocks and default stages, so the API checks stage
paths without torch; plus the datasets and devices. Run in a process of its own (the worker starts it in
the background): building the text models imports transformers, which takes seconds.
"""

from __future__ import annotations

import sys
from typing import Any

#: Built with the default options and these shapes; the names of a model's modules do not depend on them.
IMAGE_SHAPE, TEXT_SHAPE, NUM_CLASSES = (3, 32, 32), (16,), 2


def model_entry(name: str) -> dict[str, Any]:
    """`{"tree", "blocks", "default_stages"}`; tree None when the model's layers come from its options."""
    from slimpipe.modeltree import tree_json
    from worker import zoo

    entry = zoo.MODELS[name]
    tokenizer = entry.tokenizer({}) if entry.tokenizer else None
    shape = IMAGE_SHAPE if entry.takes == "image" else TEXT_SHAPE
    import torch

    try:
        with torch.device("meta"):  # names, not weights: no init, no checkpoint read (MiniLM: 2.2 s -> 0.02 s)
            model = entry.build({}, num_classes=NUM_CLASSES, input_shape=shape, tokenizer=tokenizer, on_meta=True)
    except ValueError as exc:  # hf_classifier needs options.pretrained or options.config
        return {"tree": None, "blocks": None, "default_stages": None, "note": str(exc)}
    return {"tree": tree_json(model.module), "blocks": list(model.blocks), "default_stages": model.default_stages}


def devices() -> list[str]:
    import torch

    return ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def publish(worker: str, models: list[str] | None = None, *, session: Any = None) -> dict[str, Any]:
    """Build each model and publish after each one, so the quick ones are usable while the slow ones build.
    A database that is away (a worker started before it, or a restart) is waited for."""
    from backend import crud, db
    from backend.settings import get_settings
    from worker import zoo

    catalog: dict[str, Any] = {"models": {}, "datasets": list(zoo.DATASETS), "devices": devices()}
    for name in models or list(zoo.MODELS):
        try:
            catalog["models"][name] = model_entry(name)
        except Exception as exc:  # a missing optional package: the API leaves this model's paths to the worker
            catalog["models"][name] = {"tree": None, "blocks": None, "default_stages": None, "note": repr(exc)}
        db.when_reachable(lambda: crud.publish_catalog(worker, catalog, session=session), get_settings().database_outage_s)
    return catalog


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m worker.catalog WORKER_NAME", file=sys.stderr)
        return 2
    publish(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
