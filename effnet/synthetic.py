"""A synthetic CIFAR-100 in the official python format, for tests and runs without the data.

`write_synthetic_archive` writes a real `cifar-100-python.tar.gz` whose members
`cifar-100-python/{train,test,meta}` are pickled byte-for-byte the way the official Python 2
files are (protocol 2, Python 2 `str` for every key, name and the raw pixel buffer), so any
reader of the official archive, ours or torchvision's, reads it unchanged. Class names and
the fine-to-coarse mapping are the official ones.

The images are learnable on purpose: each fine class is a colour (one of 10) times a
grating (one of 5 orientations between 0 and 90 degrees times 2 spatial frequencies), drawn
with a random phase, contrast and Gaussian noise per image. Orientations stay within
[0, 90] degrees so that a horizontal flip (which maps angle t to -t) never turns one class
into another. A small network beats chance within an epoch or two.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

FINE_LABEL_NAMES = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)
COARSE_LABEL_NAMES = (
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
)
# FINE_TO_COARSE[fine] is the coarse label of every image of that fine class (official).
FINE_TO_COARSE = (
    4,
    1,
    14,
    8,
    0,
    6,
    7,
    7,
    18,
    3,
    3,
    14,
    9,
    18,
    7,
    11,
    3,
    9,
    7,
    11,
    6,
    11,
    5,
    10,
    7,
    6,
    13,
    15,
    3,
    15,
    0,
    11,
    1,
    10,
    12,
    14,
    16,
    9,
    11,
    5,
    5,
    19,
    8,
    8,
    15,
    13,
    14,
    17,
    18,
    10,
    16,
    4,
    17,
    4,
    2,
    0,
    17,
    4,
    18,
    17,
    10,
    3,
    2,
    12,
    12,
    16,
    12,
    1,
    9,
    19,
    2,
    10,
    0,
    1,
    16,
    12,
    9,
    13,
    15,
    13,
    16,
    19,
    2,
    4,
    6,
    19,
    5,
    5,
    8,
    19,
    18,
    1,
    2,
    15,
    6,
    0,
    17,
    8,
    14,
    13,
)

_PALETTE = np.array(  # 10 well-separated RGB colours in [0, 1]
    [
        [0.9, 0.1, 0.1],
        [0.1, 0.8, 0.1],
        [0.1, 0.2, 0.9],
        [0.9, 0.9, 0.1],
        [0.9, 0.1, 0.9],
        [0.1, 0.9, 0.9],
        [0.95, 0.55, 0.1],
        [0.5, 0.1, 0.7],
        [0.55, 0.55, 0.55],
        [0.4, 0.25, 0.1],
    ]
)


class _Python2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
    """Writes `bytes` as Python 2 `str` (SHORT_BINSTRING/BINSTRING), as cPickle did in 2009.

    Read back with encoding='bytes' they are bytes; with encoding='latin1' (torchvision)
    they are str, exactly as for the official files.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_python2_str


def _dumps(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def synthetic_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one noisy image per label: uint8 (N, 32, 32, 3)."""
    labels = np.asarray(labels)
    n = len(labels)
    colour = _PALETTE[labels // 10]  # (N, 3)
    pattern = labels % 10
    angle = np.deg2rad(22.5 * (pattern % 5))  # 0, 22.5, 45, 67.5, 90 degrees
    cycles = np.where(pattern < 5, 2.0, 5.0)  # periods across the image
    phase = rng.uniform(0, 2 * np.pi, n)
    y, x = np.mgrid[0:32, 0:32] / 32.0
    along = np.cos(angle)[:, None, None] * x + np.sin(angle)[:, None, None] * y  # (N, 32, 32)
    grating = np.sin(2 * np.pi * cycles[:, None, None] * along + phase[:, None, None])
    contrast = rng.uniform(0.25, 0.45, (n, 1, 1, 1))
    image = 0.5 * colour[:, None, None, :] + 0.25 + contrast * grating[..., None]  # colour-tinted grating
    image = image + rng.normal(0.0, 0.08, image.shape)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def _batch(per_class: int, rng: np.random.Generator, label: bytes, with_filenames: bool) -> dict:
    fine = rng.permutation(np.repeat(np.arange(100), per_class))  # shuffled, like the official order
    images = synthetic_images(fine, rng)
    batch = {}
    if with_filenames:
        batch[b"filenames"] = [f"{FINE_LABEL_NAMES[c]}_s_{i:06d}.png".encode() for i, c in enumerate(fine)]
    batch[b"batch_label"] = label
    batch[b"fine_labels"] = [int(c) for c in fine]
    batch[b"coarse_labels"] = [FINE_TO_COARSE[c] for c in fine]
    # The official layout: one row per image, the R, G and B planes of 32x32 each, row-major.
    batch[b"data"] = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(fine), 3072))
    return batch


def write_synthetic_archive(
    path: Path, *, train_per_class: int = 10, test_per_class: int = 2, seed: int = 0, with_filenames: bool = False
) -> str:
    """Write a synthetic `cifar-100-python.tar.gz` to `path`; return its md5.

    `train_per_class` and `test_per_class` images per fine class (the real archive has 500
    and 100). Deterministic given `seed`: the same arguments give the same bytes.
    """
    rng = np.random.default_rng(seed)
    members = {
        "cifar-100-python/train": _dumps(_batch(train_per_class, rng, b"training batch 1 of 1", with_filenames)),
        "cifar-100-python/test": _dumps(_batch(test_per_class, rng, b"testing batch 1 of 1", with_filenames)),
        "cifar-100-python/meta": _dumps(
            {
                b"fine_label_names": [name.encode() for name in FINE_LABEL_NAMES],
                b"coarse_label_names": [name.encode() for name in COARSE_LABEL_NAMES],
            }
        ),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    # mtime=0 in the gzip header and in every tar header keeps the bytes reproducible.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        directory = tarfile.TarInfo("cifar-100-python")
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(directory)
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(raw), 0o644, 0
            tar.addfile(info, io.BytesIO(raw))
    path.write_bytes(buffer.getvalue())
    return hashlib.md5(buffer.getvalue(), usedforsecurity=False).hexdigest()
