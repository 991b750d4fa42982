"""In-memory splits and a deterministic batch iterator shared by every dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class TensorSplit:
    """Inputs (a tensor, or a tuple such as input_ids+attention_mask) and labels, indexed by batch."""

    def __init__(self, x: torch.Tensor | tuple[torch.Tensor, ...], y: torch.Tensor, transform: Transform | None = None):
        self.x, self.y, self.transform = x, y.long(), transform

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> tuple[Any, torch.Tensor]:
        if isinstance(self.x, tuple):
            x: Any = tuple(t[index] for t in self.x)
        else:
            x = self.x[index]
            if self.transform is not None:
                x = self.transform(x, generator or torch.Generator().manual_seed(0))
        return x, self.y[index]

    def labels(self, index: torch.Tensor) -> torch.Tensor:
        return self.y[index]


class LazySplit:
    """Items loaded one by one (image files); `load(i) -> (tensor, label)`. Given `labels`, a batch's labels
    alone are read without loading its items."""

    def __init__(
        self,
        n: int,
        load: Callable[[int], tuple[torch.Tensor, int]],
        transform: Transform | None = None,
        labels: Sequence[int] | None = None,
    ):
        self.n, self.load, self.transform = n, load, transform
        self.y = None if labels is None else torch.as_tensor(list(labels), dtype=torch.long)

    def __len__(self) -> int:
        return self.n

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> tuple[Any, torch.Tensor]:
        items = [self.load(int(i)) for i in index]
        x = torch.stack([t for t, _ in items])
        if self.transform is not None:
            x = self.transform(x, generator or torch.Generator().manual_seed(0))
        return x, torch.tensor([label for _, label in items], dtype=torch.long)

    def labels(self, index: torch.Tensor) -> torch.Tensor:
        if self.y is not None:
            return self.y[index]
        return torch.tensor([self.load(int(i))[1] for i in index], dtype=torch.long)


Split = TensorSplit | LazySplit


@dataclass
class DataBundle:
    train: Split
    val: Split
    num_classes: int
    input_shape: tuple[int, ...]
    kind: str = "image"  # "image" | "text"


def batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    inputs: bool = True,
) -> Iterator[tuple[Any, torch.Tensor, torch.Tensor]]:
    """(inputs, labels, sample ids) per batch; the ids key per-sample codec state (`feedback: delta`).
    `inputs=False` gives None for the inputs and neither loads nor transforms them (a pipeline stage that
    only needs the labels or the ids)."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        if inputs:
            x, y = split.batch(index, generator)
            yield x, y, index
        else:
            yield None, split.labels(index), index


def count_batches(split: Split, batch_size: int) -> int:
    """How many batches `batches(split, batch_size, drop_last=False)` yields."""
    return -(-len(split) // batch_size)


class EpochStream:
    """A run's training batches, made one at a time as they are asked for.

    Epoch e draws its order, then each batch's augmentation in turn, from one generator seeded by
    `seed(e)`, so batch k of epoch e is the same whether the epoch is read from its start or a run resumes
    at k (the batches before k are made again and dropped). One batch is held, not the epoch's (a whole
    CIFAR-10 epoch of float inputs is 614 MB in every stage process). `inputs=False` reads the labels and
    sample ids from the epoch's order alone, loading and augmenting nothing and leaving the generator
    where it was, so stages that never see the inputs agree with the one that does."""

    def __init__(self, split: Split, batch_size: int, seed: Callable[[int], int]):
        self.split, self.seed = split, seed
        self.batch_size = min(batch_size, len(split))
        self.per_epoch = steps_per_epoch(split, batch_size)
        self._epoch, self._next = -1, 0  # the epoch under way, and the batch its generator stands before
        self._order = torch.empty(0, dtype=torch.long)
        self._generator = torch.Generator()
        self._held: tuple[int, Any, torch.Tensor] | None = None

    def _start(self, epoch: int) -> None:
        self._generator = torch.Generator().manual_seed(self.seed(epoch))
        self._order = torch.randperm(len(self.split), generator=self._generator)
        self._epoch, self._next, self._held = epoch, 0, None

    def _index(self, k: int) -> torch.Tensor:
        return self._order[k * self.batch_size : (k + 1) * self.batch_size]

    def get(self, step: int, inputs: bool = True) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """(inputs or None, labels, sample ids) of training step `step`."""
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._start(epoch)
        index = self._index(k)
        if not inputs:
            return None, self.split.labels(index), index
        if self._held is not None and self._held[0] == k:
            return self._held[1], self._held[2], index
        if k < self._next:
            self._start(epoch)
        while self._next <= k:
            x, y = self.split.batch(self._index(self._next), self._generator)
            self._next += 1
        self._held = (k, x, y)
        return x, y, index


def steps_per_epoch(split: Split, batch_size: int) -> int:
    n = len(split)
    return max(1, n // batch_size) if n >= batch_size else 1


def split_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed shuffled train/val split (its own seed: the validation set never depends on the run's)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * val_fraction)))
    return order[n_val:], order[:n_val]


def normalizer(mean: list[float], std: list[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return lambda x: (x.float() / 255.0 - m) / s


def crop_flip(normalize: Callable[[torch.Tensor], torch.Tensor], pad: int = 4) -> Transform:
    """Random crop with zero padding and horizontal flip (the CIFAR recipe), then normalize."""

    def transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = normalize(x)
        n, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        out = torch.empty_like(x)
        for k in range(n):
            crop = padded[k, :, dy[k] : dy[k] + h, dx[k] : dx[k] + w]
            out[k] = crop.flip(-1) if flip[k] else crop
        return out

    return transform


def only_normalize(normalize: Callable[[torch.Tensor], torch.Tensor]) -> Transform:
    return lambda x, generator: normalize(x)
