"""Text datasets: synthetic token sequences, GLUE tasks and generic CSV/JSONL files, tokenized by the model."""

from __future__ import annotations

import csv
import json
import zlib
from pathlib import Path
from typing import Any

import torch

from worker.zoo.data import DataBundle, TensorSplit, split_indices


class HashTokenizer:
    """Whitespace words hashed into a vocabulary, with the call signature of a `transformers` tokenizer.

    For models built from a config (random init, no vocabulary file); ids 0..3 are pad/cls/sep/unk.
    """

    pad_token_id, cls_token_id, sep_token_id = 0, 1, 2

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def _ids(self, text: str) -> list[int]:
        return [4 + zlib.crc32(w.lower().encode()) % (self.vocab_size - 4) for w in text.split()]

    def __call__(self, texts, text_pair=None, *, max_length: int = 128, **_: Any) -> dict[str, torch.Tensor]:
        pairs = text_pair if text_pair is not None else [None] * len(texts)
        ids = torch.zeros(len(texts), max_length, dtype=torch.long)
        mask = torch.zeros(len(texts), max_length, dtype=torch.long)
        types = torch.zeros(len(texts), max_length, dtype=torch.long)
        for k, (a, b) in enumerate(zip(texts, pairs, strict=False)):
            seq = [self.cls_token_id, *self._ids(a), self.sep_token_id]
            n_first = len(seq)
            if b is not None:
                seq += [*self._ids(b), self.sep_token_id]
            seq = seq[:max_length]
            ids[k, : len(seq)] = torch.tensor(seq)
            mask[k, : len(seq)] = 1
            types[k, min(n_first, len(seq)) : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def tokenize(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int) -> tuple[torch.Tensor, ...]:
    if tokenizer is None:
        raise ValueError("text data needs a tokenizer: pick a text model (hf_classifier or minilm)")
    enc = tokenizer(texts, pairs, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    ids = enc["input_ids"]
    types = enc.get("token_type_ids")
    return ids, enc["attention_mask"], types if types is not None else torch.zeros_like(ids)


def _bundle(tokenizer: Any, max_length: int, train: tuple, val: tuple, num_classes: int) -> DataBundle:
    def split(texts: list[str], pairs: list[str] | None, labels: list[int]) -> TensorSplit:
        return TensorSplit(tokenize(tokenizer, texts, pairs, max_length), torch.tensor(labels, dtype=torch.long))

    return DataBundle(split(*train), split(*val), num_classes, (max_length,), kind="text")


# --------------------------------------------------------------------------- synthetic


def synthetic_text(options: dict[str, Any], *, tokenizer: Any = None, max_length: int = 32, **_: Any) -> DataBundle:
    """Random token sequences of random length; the label says which half of a marker vocabulary dominates."""
    if tokenizer is None:
        raise ValueError("synthetic_text needs a text model (hf_classifier or minilm) for its vocabulary")
    vocab = int(tokenizer.vocab_size)
    n_train, n_val = int(options.get("n_train", 256)), int(options.get("n_val", 64))
    g = torch.Generator().manual_seed(int(options.get("seed", 0)))
    markers = torch.arange(1000, 1000 + 2 * 16) % (vocab - 200) + 100  # two groups of 16 marker ids

    def make(n: int) -> TensorSplit:
        lengths = torch.randint(max(2, max_length // 2), max_length + 1, (n,), generator=g)
        ids = torch.randint(100, vocab, (n, max_length), generator=g)
        y = torch.randint(0, 2, (n,), generator=g)
        picks = markers[y[:, None] * 16 + torch.randint(0, 16, (n, max_length), generator=g)]
        use = torch.rand(n, max_length, generator=g) < 0.3
        ids = torch.where(use, picks, ids)
        mask = (torch.arange(max_length)[None, :] < lengths[:, None]).long()
        return TensorSplit((ids * mask, mask, torch.zeros_like(ids)), y)

    return DataBundle(make(n_train), make(n_val), 2, (max_length,), kind="text")


# --------------------------------------------------------------------------- files

GLUE_TASKS: dict[str, tuple[tuple[str, str | None], list[str] | None]] = {
    # task: ((text column, pair column), label names in index order; None = integer labels)
    "rte": (("sentence1", "sentence2"), ["entailment", "not_entailment"]),
    "sst2": (("sentence", None), None),
    "mrpc": (("sentence1", "sentence2"), None),
    "qnli": (("question", "sentence"), ["entailment", "not_entailment"]),
    "cola": (("sentence", None), None),
    "wnli": (("sentence1", "sentence2"), None),
}
_GLUE_TSV_ALIASES = {"#1 String": "sentence1", "#2 String": "sentence2", "Quality": "label"}


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV, TSV (GLUE's unquoted format) or JSONL file as dicts of strings."""
    if path.suffix == ".jsonl" or path.suffix == ".json":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    with path.open(newline="", encoding="utf-8") as f:
        if path.suffix == ".tsv":
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.DictReader(f)
        return [{_GLUE_TSV_ALIASES.get(k, k): v for k, v in row.items()} for row in reader]


def _labels(values: list[Any], names: list[str] | None) -> tuple[list[int], int]:
    if names is not None and all(str(v) in names for v in values):
        return [names.index(str(v)) for v in values], len(names)
    try:
        ints = [int(v) for v in values]
        return ints, max(ints) + 1
    except (TypeError, ValueError):
        classes = sorted({str(v) for v in values})
        return [classes.index(str(v)) for v in values], len(classes)


def _columns(rows: list[dict[str, Any]], text: str, pair: str | None, label: str, where: Path) -> tuple:
    if not rows:
        raise ValueError(f"{where} has no rows")
    for column in (text, pair, label):
        if column is not None and column not in rows[0]:
            # Only a count: the header of a file that is not a dataset is its first line, which must not leak.
            raise ValueError(f"{where} has no column {column!r} among its {len(rows[0])}; set the *_column options")
    texts = [str(r[text]) for r in rows]
    pairs = [str(r[pair]) for r in rows] if pair else None
    return texts, pairs, [r[label] for r in rows]


def _find(root: Path, stems: tuple[str, ...]) -> Path:
    for stem in stems:
        for suffix in (".tsv", ".jsonl", ".csv"):
            if (root / f"{stem}{suffix}").exists():
                return root / f"{stem}{suffix}"
    raise ValueError(f"data.options.path: {root} has none of {', '.join(s + '.tsv/.jsonl' for s in stems)}")


def glue(options: dict[str, Any], *, tokenizer: Any = None, max_length: int = 128, **_: Any) -> DataBundle:
    """A GLUE task from local files: GLUE's train.tsv/dev.tsv, or train.jsonl/validation.jsonl."""
    task = str(options.get("task", "rte")).lower()
    if task not in GLUE_TASKS:
        raise ValueError(f"data.options.task: unknown GLUE task {task!r}; choose one of {', '.join(GLUE_TASKS)}")
    if "path" not in options:
        raise ValueError("data.options.path: give the folder with the task's train and dev/validation files")
    root = Path(options["path"]).expanduser()
    (text, pair), names = GLUE_TASKS[task]
    train_file, val_file = _find(root, ("train",)), _find(root, ("dev", "validation", "val"))
    t_texts, t_pairs, t_raw = _columns(read_rows(train_file), text, pair, "label", train_file)
    v_texts, v_pairs, v_raw = _columns(read_rows(val_file), text, pair, "label", val_file)
    labels, num_classes = _labels(t_raw + v_raw, names)
    n = len(t_raw)
    return _bundle(tokenizer, max_length, (t_texts, t_pairs, labels[:n]), (v_texts, v_pairs, labels[n:]), num_classes)


def text_file(options: dict[str, Any], *, tokenizer: Any = None, max_length: int = 128, **_: Any) -> DataBundle:
    """options.train (CSV/TSV/JSONL), options.val or options.val_fraction; columns text[, text_pair], label."""
    if "train" not in options:
        raise ValueError("data.options.train: give the path of a CSV or JSONL file with text and label columns")
    text, pair = options.get("text_column", "text"), options.get("text_pair_column")
    label = options.get("label_column", "label")
    train_path = Path(options["train"]).expanduser()
    texts, pairs, raw = _columns(read_rows(train_path), text, pair, label, train_path)
    if options.get("val"):
        val_path = Path(options["val"]).expanduser()
        v_texts, v_pairs, v_raw = _columns(read_rows(val_path), text, pair, label, val_path)
    else:
        train_idx, val_idx = split_indices(len(raw), float(options.get("val_fraction", 0.2)))
        pick = lambda seq, idx: None if seq is None else [seq[int(i)] for i in idx]  # noqa: E731
        v_texts, v_pairs, v_raw = pick(texts, val_idx), pick(pairs, val_idx), pick(raw, val_idx)
        texts, pairs, raw = pick(texts, train_idx), pick(pairs, train_idx), pick(raw, train_idx)
    labels, num_classes = _labels(list(raw) + list(v_raw), None)
    n = len(raw)
    return _bundle(tokenizer, max_length, (texts, pairs, labels[:n]), (v_texts, v_pairs, labels[n:]), num_classes)
