"""CIFAR-100 prepared for training: the train/val/test arrays and a loader that lives on the device.

Two halves:

1. `prepare` turns the archive (as read by `effnet.download.read_cifar100`) into
   `train.npz`, `val.npz`, `test.npz` and `meta.json`. Validation images are carved from the
   official training set, `val_per_class` per fine class with a seeded stratified draw; the
   official test set is kept whole and in its order. The paper reports ImageNet validation
   accuracy and tunes nothing on CIFAR; we keep a held-out validation split so that model
   selection (the coefficient search) never sees the test set.

2. `DeviceLoader` follows airbench: the split is copied to the device once as uint8, and
   every batch is shuffled, cropped, flipped, normalised and resized there with a few
   batched tensor ops; no worker processes, no PIL. The augmentation is the standard CIFAR
   one (random crop after padding, horizontal flip, optional cutout), not the paper's
   ImageNet pipeline (Inception-style random-resized crops with AutoAugment). Resolution
   scaling (paper Section 3.3, gamma^phi) reaches the network through the final bilinear
   resize from 32x32 to `resolution`: the content stays CIFAR's 32x32 pixels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from effnet.download import DataError
from effnet.io import replace_dir, write_json

SPLITS = ("train", "val", "test")
NUM_FINE_CLASSES = 100
_RUN_DOWNLOAD = "run the download stage first: dvc repro download (or python stages/download.py)"


# --------------------------------------------------------------------------------------
# preparing the splits
# --------------------------------------------------------------------------------------


def split_train_val(fine_labels: np.ndarray, val_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of the official training set: sorted (train_indices, val_indices).

    Class by class (0..99), a permutation from `np.random.default_rng(seed)` picks
    `val_per_class` images for validation; the rest stay in train. Both index arrays are
    sorted, so each split keeps the archive's order.
    """
    if not (isinstance(val_per_class, int) and 1 <= val_per_class <= 499):
        raise DataError(f"data.val_per_class must be an integer in 1..499, got {val_per_class!r}")
    fine_labels = np.asarray(fine_labels)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in range(NUM_FINE_CLASSES):
        members = np.flatnonzero(fine_labels == c)
        if len(members) <= val_per_class:
            raise DataError(
                f"class {c} has {len(members)} training images; data.val_per_class={val_per_class} "
                "must leave at least one for training"
            )
        members = rng.permutation(members)
        val.append(members[:val_per_class])
        train.append(members[val_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of uint8 NHWC images, in [0, 1] units.

    Exact and the same on every machine: the sums are integers (a 256-bin histogram per channel, no
    float copy), the mean one correctly rounded division, the variance an exact fraction rounded once
    before the square root. A float dot product's summation order depends on the CPU's vector units,
    so its last bits, and with them meta.json's hash and every stage after it, differed by machine.
    """
    pixel = np.arange(256, dtype=np.int64)
    mean, std = [], []
    for channel in range(3):
        counts = np.bincount(images[..., channel].ravel(), minlength=256).astype(np.int64)
        n, total, squares = int(counts.sum()), int(counts @ pixel), int(counts @ pixel**2)
        mean.append(total / (255 * n))
        std.append(math.sqrt(Fraction(n * squares - total * total, (255 * n) ** 2)))
    return mean, std


def _class_counts(fine_labels: np.ndarray) -> dict:
    counts = np.bincount(fine_labels, minlength=NUM_FINE_CLASSES)
    return {"images": int(len(fine_labels)), "per_class_min": int(counts.min()), "per_class_max": int(counts.max())}


def prepare(archive: dict, out_dir: Path, *, val_per_class: int, seed: int, source_md5: str) -> dict:
    """Write the prepared splits to `out_dir` atomically; return the metadata (also `meta.json`).

    `archive` is `read_cifar100`'s result. Files: `{train,val,test}.npz` (uncompressed, keys
    `images` uint8 (N, 32, 32, 3), `fine_labels` int64, `coarse_labels` int64) and
    `meta.json` (class names, counts, the training split's channel mean/std, provenance).
    Everything is written to a temporary sibling directory that replaces `out_dir` only when
    complete; on failure the temporary directory is removed and an existing `out_dir` is left
    as it was.
    """
    train_idx, val_idx = split_train_val(archive["train"]["fine_labels"], val_per_class, seed)
    splits = {
        "train": {key: value[train_idx] for key, value in archive["train"].items()},
        "val": {key: value[val_idx] for key, value in archive["train"].items()},
        "test": archive["test"],
    }
    mean, std = channel_stats(splits["train"]["images"])
    meta = {
        "fine_label_names": list(archive["fine_label_names"]),
        "coarse_label_names": list(archive["coarse_label_names"]),
        "splits": {name: _class_counts(split["fine_labels"]) for name, split in splits.items()},
        "mean": mean,  # of the training split, [0, 1] units, RGB
        "std": std,
        "source_md5": source_md5,
        "val_per_class": val_per_class,
        "seed": seed,
    }

    def fill(tmp: Path) -> None:
        for name, split in splits.items():
            np.savez(
                tmp / f"{name}.npz",
                images=split["images"],
                fine_labels=split["fine_labels"].astype(np.int64),
                coarse_labels=split["coarse_labels"].astype(np.int64),
            )
        write_json(tmp / "meta.json", meta)

    replace_dir(out_dir, fill)  # the previous output stays until the new one is complete
    return meta


# --------------------------------------------------------------------------------------
# loading the splits
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # eq on arrays would be elementwise, not a bool
class Split:
    """One prepared split, on the host."""

    images: np.ndarray  # uint8 (N, 32, 32, 3)
    fine_labels: np.ndarray  # int64 (N,), 0..99
    coarse_labels: np.ndarray  # int64 (N,), 0..19

    def __len__(self) -> int:
        return len(self.fine_labels)


def load_split(data_dir: Path, split: str) -> Split:
    """Read `data_dir/<split>.npz` (split: train, val or test)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")
    path = Path(data_dir) / f"{split}.npz"
    if not path.is_file():
        raise DataError(f"{path}: no such file; {_RUN_DOWNLOAD}")
    with np.load(path, allow_pickle=False) as arrays:
        missing = {"images", "fine_labels", "coarse_labels"} - set(arrays.files)
        if missing:
            raise DataError(f"{path}: missing array(s) {', '.join(sorted(missing))}; {_RUN_DOWNLOAD}")
        return Split(arrays["images"], arrays["fine_labels"], arrays["coarse_labels"])


def load_meta(data_dir: Path) -> dict:
    """Read `data_dir/meta.json` (class names, counts, training mean/std)."""
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise DataError(f"{path}: no such file; {_RUN_DOWNLOAD}")
    return json.loads(path.read_text())


def subset_per_class(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of a stratified subset: `per_class` images of every class present.

    `per_class == 0` means all images. Used for the short budgets of the search and the
    scaling study (`train_per_class`).
    """
    labels = np.asarray(labels)
    if per_class < 0:
        raise DataError(f"per_class must be >= 0, got {per_class}")
    if per_class == 0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise DataError(f"asked for {per_class} images per class, but class {c} has only {len(members)}")
        chosen.append(rng.permutation(members)[:per_class])
    return np.sort(np.concatenate(chosen))


# --------------------------------------------------------------------------------------
# the device-resident loader
# --------------------------------------------------------------------------------------


def _generator(device: torch.device, *key: int) -> torch.Generator:
    """A generator on `device` seeded from the tuple `key`, independent of the global RNG."""
    seed = int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0] >> 1)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


class DeviceLoader:
    """Batches of one split, held on `device` as uint8 and augmented there (after airbench).

    Train mode (`train=True`): each epoch is a permutation of the split drawn on the device
    from (seed, epoch), identical on every rank. Its tail is dropped so that it divides into
    `world_size * batch_size`; step i's global batch is the permutation's i-th slice of that
    size, and rank r takes the r-th `batch_size` images of it, so ranks are disjoint and yield
    the same number of batches (DDP needs that). Each image is then

      - randomly translated: the split is reflect-padded by `crop_padding` pixels once, at
        construction (uint8: 216 MB for 45,000 images at padding 4), and a 32x32 window
        is gathered at a random offset per image, all images of a batch in one indexing op;
      - flipped left-right with probability 0.5 (`hflip`);
      - converted to float and normalised with the training split's `mean` and `std`;
      - given a `cutout` x `cutout` square of zeros (the mean colour after normalisation),
        centred anywhere in the image and clipped at its border (DeVries & Taylor, 2017);
      - resized to `resolution` (bilinear, no antialiasing) if that is not 32.

    The augmentation draws come from a generator seeded with (seed, epoch, rank), so the
    same seed gives the same batches. Call `set_epoch` before iterating each epoch;
    iterating again without it repeats the epoch.

    Eval mode (`train=False`): no shuffle, no augmentation; rank r takes a contiguous range
    of the split (sizes differ by at most one), in order, and the last batch may be smaller,
    so every image is seen exactly once over all ranks. Batch counts can then differ by one
    between ranks: evaluate with the unwrapped model, not through DDP's forward.

    Augmentation follows the usual CIFAR recipe, not the paper's ImageNet one (AutoAugment,
    random-resized crops); reflect padding (as in airbench) rather than torchvision's zero
    padding avoids black borders.
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,  # uint8 (N, H, W, 3); CIFAR: H = W = 32
        labels: np.ndarray | torch.Tensor,  # int64 (N,)
        *,
        batch_size: int,  # per rank
        train: bool,
        device: torch.device | str = "cpu",
        mean: tuple[float, float, float],  # [0, 1] units
        std: tuple[float, float, float],
        resolution: int = 32,
        crop_padding: int = 4,
        hflip: bool = True,
        cutout: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.device = torch.device(device)
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in 0..{world_size - 1}, got {rank}")
        if batch_size < 1 or resolution < 1 or cutout < 0 or crop_padding < 0:
            raise ValueError("batch_size and resolution must be >= 1, cutout and crop_padding >= 0")
        self.height, self.width = int(images.shape[1]), int(images.shape[2])
        if train and crop_padding >= min(self.height, self.width):
            raise ValueError(
                f"crop_padding must be < {min(self.height, self.width)} (reflect padding), got {crop_padding}"
            )

        self.batch_size, self.train, self.resolution = batch_size, train, resolution
        self.crop_padding = crop_padding if train else 0
        self.hflip, self.cutout = hflip and train, cutout if train else 0
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.channels_last, self.dtype = channels_last, dtype
        self.epoch = 0
        self.size = int(images.shape[0])

        # (N, H, W, 3) -> (N, 3, H, W), on the device once, as uint8: 150 MB for all of CIFAR.
        self.images = images.to(self.device).permute(0, 3, 1, 2).contiguous()
        self.labels = labels.to(self.device, torch.int64)
        if self.crop_padding:
            self.images = self._reflect_pad(self.images, self.crop_padding)
        # x / 255 normalised = x * scale + shift, per channel.
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std_t), -mean_t / std_t

        if train:
            self.steps = self.size // (world_size * batch_size)
            if self.steps == 0:
                raise ValueError(
                    f"{self.size} training images cannot fill one global batch of "
                    f"{world_size} x {batch_size}; lower the batch size"
                )
            self.num_images = self.steps * batch_size
        else:
            base, extra = divmod(self.size, world_size)
            self.start = rank * base + min(rank, extra)
            self.num_images = base + (1 if rank < extra else 0)
            self.steps = math.ceil(self.num_images / batch_size)

    @staticmethod
    def _reflect_pad(images: torch.Tensor, pad: int) -> torch.Tensor:
        """Reflect-pad uint8 NCHW images by `pad` pixels (edge not repeated, as F.pad's 'reflect')."""

        def reflect(size: int) -> torch.Tensor:  # -pad..size+pad-1 folded back into 0..size-1
            i = torch.arange(-pad, size + pad, device=images.device).abs()
            return torch.where(i >= size, 2 * (size - 1) - i, i)

        return images[:, :, reflect(images.shape[2])][:, :, :, reflect(images.shape[3])].contiguous()

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch: its permutation and its augmentation draws."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.train:
            for start in range(self.start, self.start + self.num_images, self.batch_size):
                stop = min(start + self.batch_size, self.start + self.num_images)
                yield self._finish(self.images[start:stop]), self.labels[start:stop]
            return

        # The epoch's order: the same on every rank, then this rank's share of every step.
        order = torch.randperm(self.size, generator=_generator(self.device, self.seed, self.epoch), device=self.device)
        order = order[: self.steps * self.world_size * self.batch_size]
        order = order.view(self.steps, self.world_size, self.batch_size)[:, self.rank]  # (steps, B)

        # All of this rank's random draws for the epoch, at once.
        generator = _generator(self.device, self.seed, self.epoch, 1, self.rank)
        shape = (self.steps, self.batch_size)
        span = 2 * self.crop_padding + 1
        dy = torch.randint(0, span, shape, generator=generator, device=self.device)
        dx = torch.randint(0, span, shape, generator=generator, device=self.device)
        flip = torch.rand(shape, generator=generator, device=self.device) < 0.5
        cy = torch.randint(0, self.height, shape, generator=generator, device=self.device)
        cx = torch.randint(0, self.width, shape, generator=generator, device=self.device)

        for step in range(self.steps):
            index = order[step]
            images = self._crop(index, dy[step], dx[step])  # uint8 (B, 3, H, W)
            if self.hflip:
                images = torch.where(flip[step].view(-1, 1, 1, 1), images.flip(-1), images)
            yield self._finish(images, cy[step], cx[step]), self.labels[index]

    def _crop(self, index: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
        """Gather an H x W window of each padded image at offset (dy, dx): a translation."""
        if not self.crop_padding:
            return self.images[index]
        rows = (dy.view(-1, 1) + torch.arange(self.height, device=self.device)).view(-1, 1, self.height, 1)
        cols = (dx.view(-1, 1) + torch.arange(self.width, device=self.device)).view(-1, 1, 1, self.width)
        channels = torch.arange(3, device=self.device).view(1, 3, 1, 1)
        return self.images[index.view(-1, 1, 1, 1), channels, rows, cols]  # (B, 3, H, W)

    def _finish(
        self, images: torch.Tensor, cy: torch.Tensor | None = None, cx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> normalised, cut out, resized (B, 3, R, R) in `dtype`."""
        images = images.float() * self.scale + self.shift
        if self.cutout:
            half = self.cutout // 2
            ys = torch.arange(self.height, device=self.device).view(1, -1, 1)
            xs = torch.arange(self.width, device=self.device).view(1, 1, -1)
            y0, x0 = (cy - half).view(-1, 1, 1), (cx - half).view(-1, 1, 1)
            inside = (ys >= y0) & (ys < y0 + self.cutout) & (xs >= x0) & (xs < x0 + self.cutout)  # (B, H, W)
            images = images.masked_fill(inside.unsqueeze(1), 0.0)
        if self.resolution != self.height or self.resolution != self.width:
            images = F.interpolate(
                images, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False, antialias=False
            )
        images = images.to(self.dtype)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images
