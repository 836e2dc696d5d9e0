"""effnet/data.py and effnet/synthetic.py: prepared splits and the device-resident loader."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from effnet.data import DeviceLoader, channel_stats, load_meta, load_split, prepare, split_train_val, subset_per_class
from effnet.download import DataError, read_cifar100
from effnet.synthetic import FINE_TO_COARSE, synthetic_images, write_synthetic_archive

# --------------------------------------------------------------------------------------
# prepare / load
# --------------------------------------------------------------------------------------


def test_prepared_splits(prepared_data_dir, synthetic_archive):
    archive = read_cifar100(synthetic_archive[0])  # the same bytes as the session's archive
    train, val, test = (load_split(prepared_data_dir, s) for s in ("train", "val", "test"))
    for split, per_class in ((train, 8), (val, 2), (test, 2)):
        assert split.images.shape == (len(split), 32, 32, 3) and split.images.dtype == np.uint8
        assert split.fine_labels.dtype == np.int64 and split.coarse_labels.dtype == np.int64
        assert np.bincount(split.fine_labels, minlength=100).tolist() == [per_class] * 100
        assert np.array_equal(split.coarse_labels, np.array(FINE_TO_COARSE)[split.fine_labels])
    # Test untouched and in the archive's order; train and val partition the official train set.
    assert np.array_equal(test.images, archive["test"]["images"])
    assert np.array_equal(test.fine_labels, archive["test"]["fine_labels"])
    official = sorted(img.tobytes() for img in archive["train"]["images"])
    assert sorted(img.tobytes() for img in np.concatenate([train.images, val.images])) == official


def test_meta(prepared_data_dir):
    meta = load_meta(prepared_data_dir)
    train = load_split(prepared_data_dir, "train")
    pixels = train.images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(meta["mean"], pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(meta["std"], pixels.std(0), rtol=1e-12)
    assert meta["splits"]["val"] == {"images": 200, "per_class_min": 2, "per_class_max": 2}
    assert meta["val_per_class"] == 2 and meta["seed"] == 0 and len(meta["source_md5"]) == 32
    assert len(meta["fine_label_names"]) == 100 and len(meta["coarse_label_names"]) == 20
    json.dumps(meta)  # plain JSON types only


def test_split_is_seeded_and_stratified():
    labels = np.repeat(np.arange(100), 20)
    train_a, val_a = split_train_val(labels, 5, seed=0)
    train_b, val_b = split_train_val(labels, 5, seed=0)
    _, val_c = split_train_val(labels, 5, seed=1)
    assert np.array_equal(val_a, val_b) and np.array_equal(train_a, train_b) and not np.array_equal(val_a, val_c)
    assert np.bincount(labels[val_a]).tolist() == [5] * 100 and np.all(np.diff(val_a) > 0)
    assert not set(train_a) & set(val_a) and len(train_a) + len(val_a) == len(labels)


@pytest.mark.parametrize("val_per_class", [0, 500, 10])  # 10: the synthetic train set has only 10 per class
def test_val_per_class_out_of_range(synthetic_archive, tmp_path, val_per_class):
    with pytest.raises(DataError, match="val_per_class"):
        prepare(
            read_cifar100(synthetic_archive[0]), tmp_path / "out", val_per_class=val_per_class, seed=0, source_md5="x"
        )
    assert not list(tmp_path.glob("out*"))


def test_prepare_is_atomic(synthetic_archive, tmp_path, monkeypatch):
    archive = read_cifar100(synthetic_archive[0])
    out = tmp_path / "cifar100"
    prepare(archive, out, val_per_class=2, seed=0, source_md5="a")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_savez, calls = np.savez, []

    def savez_failing_on_the_second_file(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise OSError("disk full")
        real_savez(*args, **kwargs)

    monkeypatch.setattr(np, "savez", savez_failing_on_the_second_file)
    with pytest.raises(OSError, match="disk full"):
        prepare(archive, out, val_per_class=3, seed=1, source_md5="b")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar100", "source"]


def test_load_without_data_says_how_to_make_it(tmp_path):
    with pytest.raises(DataError, match="dvc repro download"):
        load_split(tmp_path / "missing", "train")
    with pytest.raises(DataError, match="dvc repro download"):
        load_meta(tmp_path / "missing")


def test_subset_per_class():
    labels = np.repeat(np.arange(10), [5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]
    subset = subset_per_class(labels, 4, seed=3)
    assert np.bincount(labels[subset]).tolist() == [4] * 10 and np.all(np.diff(subset) > 0)
    assert np.array_equal(subset, subset_per_class(labels, 4, seed=3))
    assert not np.array_equal(subset, subset_per_class(labels, 4, seed=4))
    assert np.array_equal(subset_per_class(labels, 0, seed=0), np.arange(len(labels)))
    with pytest.raises(DataError, match="class 0 has only 5"):
        subset_per_class(labels, 6, seed=0)


# --------------------------------------------------------------------------------------
# DeviceLoader
# --------------------------------------------------------------------------------------

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _loader(images, labels, **kwargs) -> DeviceLoader:
    defaults = dict(batch_size=16, train=True, mean=MEAN, std=STD)
    return DeviceLoader(images, labels, **{**defaults, **kwargs})


def _pixels(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """Undo the normalisation: back to 0..255 values."""
    return x * torch.tensor(std).view(1, 3, 1, 1) * 255 + torch.tensor(mean).view(1, 3, 1, 1) * 255


def _random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_labels_stay_with_their_images():
    labels = np.arange(120) % 100
    images = np.broadcast_to((2 * labels).astype(np.uint8)[:, None, None, None], (120, 32, 32, 3)).copy()
    for resolution in (32, 40):
        loader = _loader(images, labels, resolution=resolution, seed=5)
        for x, y in loader:
            assert x.shape[-1] == resolution
            values = _pixels(x).round()
            assert torch.equal(values, (2 * y).float().view(-1, 1, 1, 1).expand_as(values))


def test_crop_is_a_translation_of_the_padded_image():
    images = _random_images(64)
    padded = F.pad(torch.from_numpy(images).permute(0, 3, 1, 2).float(), (4, 4, 4, 4), mode="reflect")
    loader = _loader(images, np.arange(64), batch_size=64, hflip=False, mean=(0, 0, 0), std=(1, 1, 1))
    ((x, y),) = list(loader)
    offsets = set()
    for out, label in zip(x * 255, y, strict=True):
        matches = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if torch.allclose(out, padded[label, :, dy : dy + 32, dx : dx + 32], atol=1e-3)
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 20  # offsets do vary from image to image


def test_flip_is_an_exact_mirror():
    images = _random_images(256)
    source = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    loader = _loader(images, np.arange(256), batch_size=256, crop_padding=0, mean=(0, 0, 0), std=(1, 1, 1))
    ((x, y),) = list(loader)
    x = (x * 255).round()
    same = (x == source[y]).flatten(1).all(1)
    mirrored = (x == source[y].flip(-1)).flatten(1).all(1)
    assert torch.all(same ^ mirrored)
    assert 90 < mirrored.sum() < 166  # p = 0.5 per image


def test_cutout_zeroes_one_square_per_image():
    images = np.full((64, 32, 32, 3), 200, dtype=np.uint8)
    loader = _loader(images, np.zeros(64), batch_size=64, crop_padding=0, hflip=False, cutout=8)
    ((x, _),) = list(loader)
    zero = x == 0
    assert torch.equal(zero[:, 0], zero[:, 2])  # the same square in every channel
    area = zero[:, 0].flatten(1).sum(1)
    assert torch.all(area >= 16) and torch.all(area <= 64) and (area == 64).sum() > 20


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_evaluation_visits_every_image_once(world_size):
    images = _random_images(103)
    seen, pixels = [], []
    for rank in range(world_size):
        loader = _loader(images, np.arange(103), batch_size=10, train=False, rank=rank, world_size=world_size)
        batches = list(loader)
        assert len(batches) == len(loader) and sum(len(b[1]) for b in batches) == loader.num_images
        seen += [y for _, y in batches]
        pixels += [_pixels(x).round() for x, _ in batches]
    assert torch.equal(torch.cat(seen), torch.arange(103))  # each once, in order
    assert torch.equal(torch.cat(pixels), torch.from_numpy(images).permute(0, 3, 1, 2).float())  # un-augmented


def test_two_ranks_partition_a_training_epoch():
    images, labels = _random_images(100), np.arange(100)
    ranks = [_loader(images, labels, batch_size=8, rank=r, world_size=2, seed=3) for r in range(2)]
    for loader in ranks:
        loader.set_epoch(4)
    batches = [[y for _, y in loader] for loader in ranks]
    assert len(batches[0]) == len(batches[1]) == len(ranks[0]) == 6  # 100 // (2 * 8)
    assert ranks[0].num_images == 48
    first, second = torch.cat(batches[0]), torch.cat(batches[1])
    assert not set(first.tolist()) & set(second.tolist())
    # Step i over both ranks is step i of one rank with the global batch.
    single = _loader(images, labels, batch_size=16, seed=3)
    single.set_epoch(4)
    for step, (_, y) in enumerate(single):
        assert torch.equal(torch.cat([batches[0][step], batches[1][step]]), y)


def test_same_seed_same_batches_other_epoch_other_order():
    images, labels = _random_images(200), np.arange(200)

    def epoch(seed: int, number: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = _loader(images, labels, seed=seed, cutout=6)
        loader.set_epoch(number)
        return list(loader)

    state = torch.get_rng_state()
    a, b = epoch(0, 1), epoch(0, 1)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    assert not torch.equal(a[0][1], epoch(0, 2)[0][1])
    assert not torch.equal(a[0][1], epoch(1, 1)[0][1])
    assert len(a) == 12 and sorted(torch.cat([y for _, y in a]).tolist()) != list(range(192))  # tail dropped at random


@pytest.mark.parametrize("resolution", [24, 32, 45])
def test_resize_and_layout(resolution):
    loader = _loader(_random_images(32), np.arange(32), resolution=resolution, channels_last=True, dtype=torch.bfloat16)
    x, y = next(iter(loader))
    assert x.shape == (16, 3, resolution, resolution) and x.dtype == torch.bfloat16 and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last)
    plain, _ = next(iter(_loader(_random_images(32), np.arange(32))))
    assert plain.is_contiguous() and plain.dtype == torch.float32


def test_normalised_with_training_statistics(prepared_data_dir):
    meta, train = load_meta(prepared_data_dir), load_split(prepared_data_dir, "train")
    loader = DeviceLoader(
        train.images, train.fine_labels, batch_size=256, train=False, mean=tuple(meta["mean"]), std=tuple(meta["std"])
    )
    x = torch.cat([x for x, _ in loader]).double()
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.zeros(3, dtype=torch.double), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std((0, 2, 3), correction=0), torch.ones(3, dtype=torch.double), atol=1e-5, rtol=0)


def test_too_few_images_for_a_global_batch():
    with pytest.raises(ValueError, match="lower the batch size"):
        _loader(_random_images(20), np.arange(20), batch_size=16, world_size=2)


# --------------------------------------------------------------------------------------
# synthetic data
# --------------------------------------------------------------------------------------


def test_synthetic_archive_is_deterministic(tmp_path):
    a = write_synthetic_archive(tmp_path / "a.tar.gz", train_per_class=2, test_per_class=1, seed=7)
    b = write_synthetic_archive(tmp_path / "b.tar.gz", train_per_class=2, test_per_class=1, seed=7)
    c = write_synthetic_archive(tmp_path / "c.tar.gz", train_per_class=2, test_per_class=1, seed=8)
    assert a == b != c


def test_synthetic_classes_are_separable():
    """Phase-invariant features (mean colour, Fourier magnitudes) separate the 100 classes."""
    rng = np.random.default_rng(0)

    def features(labels):
        images = synthetic_images(labels, rng).astype(np.float64) / 255
        gray = images.mean(-1)
        spectrum = np.abs(np.fft.rfft2(gray - gray.mean((1, 2), keepdims=True)))[:, :8, :8].reshape(len(labels), -1)
        return np.concatenate([images.mean((1, 2)) * 10, spectrum / 100], axis=1)

    train_labels, test_labels = np.repeat(np.arange(100), 10), np.repeat(np.arange(100), 3)
    train = features(train_labels)
    centroids = np.stack([train[train_labels == c].mean(0) for c in range(100)])
    test = features(test_labels)
    predicted = ((test[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == test_labels).mean() > 0.8  # chance is 0.01


def test_channel_stats_are_exact_and_do_not_depend_on_the_pixels_order():
    """The normalisation in meta.json is a stage output: its last bits must not depend on the machine. Each
    mean and std is the exact value rounded once (a float dot product over the histogram, as before, was off
    in the last bit for most of these arrays, and its rounding depends on the CPU's vector units), and any
    reordering of the pixels gives the very same floats."""
    for seed in range(10):
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, size=(int(rng.integers(10, 2000)), 8, 8, 3), dtype=np.uint8)
        mean, std = channel_stats(images)
        for c in range(3):  # Python's int / int and Fraction -> float round exactly once
            values = images[..., c].astype(np.int64).ravel()
            n, total, squares = values.size, int(values.sum()), int((values**2).sum())
            assert mean[c] == total / (255 * n)
            assert std[c] == math.sqrt(Fraction(n * squares - total**2, (255 * n) ** 2))
        x = images.reshape(-1, 3).astype(np.float64) / 255.0
        np.testing.assert_allclose(std, x.std(axis=0), rtol=1e-12)
        shuffled = rng.permutation(images.reshape(-1, 3)).reshape(images.shape)
        assert channel_stats(shuffled) == (mean, std)
    images[..., 2] = 255  # a constant channel: std exactly 0
    assert channel_stats(images)[0][2] == 1.0 and channel_stats(images)[1][2] == 0.0
    assert all(type(v) is float for v in mean + std)  # plain floats: written to meta.json as they are
