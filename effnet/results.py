"""The small result files of one evaluated model, and the table built from them alone.

Each model's chain ends with two small files, committed with the run, so that the summary
(metrics/models.csv, the figures, REPORT.md) rebuilds on a machine that has none of the
weights:

- `metrics/models/<model>.json`: one flat record with the keys of `COLUMNS`;
- `predictions/<model>.npz`: its predicted class for every test image (see `save_predictions`),
  which the report's paired comparisons (`effnet.stats`) read.

numpy and the standard library only (no torch): the summary stages import this module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effnet.io import write_atomic, write_csv


def accuracy_keys(split: str) -> list[str]:
    """`val/top1`, `val/top5`, `val/top1_ema`, ..., `val/top5_ema_flip`: every accuracy of one split."""
    return [f"{split}/top{k}{ema}{flip}" for ema in ("", "_ema") for flip in ("", "_flip") for k in (1, 5)]


# Columns of metrics/models.csv, in order; each metrics/models/<model>.json holds the same keys.
# With several seeds (train.seeds) the accuracies are means over the seeds and `seeds` counts them.
COLUMNS: tuple[str, ...] = (
    "model",
    "name",
    "group",
    "strategy",
    "target",
    "arch",
    "width",
    "depth",
    "resolution",
    "params",
    "flops",
    *accuracy_keys("val"),
    "val/images",
    *accuracy_keys("test"),
    "test/images",
    "throughput_images_per_s",
    "train_time_s",
    "epochs",
    "has_ema",
    "device",
    "seeds",
)
# Values of columns added after a run was made, for its records that lack them: records written
# before `train.seeds` existed are of one seed.
LATER_COLUMNS: dict[str, Any] = {"seeds": 1}


# --------------------------------------------------------------------------------------
# per-image test predictions
# --------------------------------------------------------------------------------------


def images_id(labels: np.ndarray, images: np.ndarray | None = None) -> str:
    """md5 of the test labels (as int64) and, when given, the images: two predictions files with the
    same id are about the same images in the same order."""
    digest = hashlib.md5(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    if images is not None:
        digest.update(np.ascontiguousarray(images).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class Predictions:
    """A model's predicted class for every test image, per seed, with the true classes."""

    top1: np.ndarray  # (seeds, images): raw weights
    top1_ema: np.ndarray  # (seeds, images): EMA weights (the raw ones again when the model kept no EMA)
    labels: np.ndarray  # (images,)
    test_set: str  # `images_id` of the images
    has_ema: bool

    def correct(self, ema: bool = True) -> np.ndarray:
        """(seeds, images) booleans: right or wrong, per seed and image."""
        return (self.top1_ema if ema else self.top1) == self.labels[None, :]


def _class_dtype(*arrays: np.ndarray) -> type:
    """uint8 while every class fits (CIFAR-100), else int16."""
    return np.uint8 if max(int(a.max(initial=0)) for a in arrays) < 256 else np.int16


def save_predictions(path: Path, predictions: Predictions) -> None:
    """Write `predictions` as a compressed .npz (about 10 KB per seed and weights for 10,000 CIFAR-100 images).

    Arrays: `top1`, `top1_ema` (seeds, images) and `labels` (images,) as uint8 (int16 beyond
    256 classes), in the split's stored order; `test_set` (the md5 of labels and images) and
    `has_ema`. Written atomically.
    """
    top1, top1_ema, labels = (np.asarray(a) for a in (predictions.top1, predictions.top1_ema, predictions.labels))
    if top1.ndim != 2 or top1.shape != top1_ema.shape or top1.shape[1] != len(labels):
        raise ValueError(f"predictions of shape {top1.shape} and {top1_ema.shape} do not match {len(labels)} labels")
    dtype = _class_dtype(top1, top1_ema, labels)
    write_atomic(
        Path(path),
        lambda tmp: np.savez_compressed(
            tmp,
            top1=top1.astype(dtype),
            top1_ema=top1_ema.astype(dtype),
            labels=labels.astype(dtype),
            test_set=np.array(predictions.test_set),
            has_ema=np.array(bool(predictions.has_ema)),
        ),
    )


def load_predictions(path: Path) -> Predictions:
    """Read a file of `save_predictions`; a file that is not one raises ValueError naming it."""
    path = Path(path)
    try:
        with np.load(path) as f:
            p = Predictions(
                top1=f["top1"].astype(np.int64),
                top1_ema=f["top1_ema"].astype(np.int64),
                labels=f["labels"].astype(np.int64),
                test_set=str(f["test_set"]),
                has_ema=bool(f["has_ema"]),
            )
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(
            f"{path}: not a predictions file of the evaluate stage ({error}); rerun `dvc repro evaluate@<model>`"
        ) from None
    if p.top1.ndim != 2 or p.top1.shape != p.top1_ema.shape or p.top1.shape[1] != len(p.labels):
        raise ValueError(
            f"{path}: arrays of shapes {p.top1.shape}, {p.top1_ema.shape} and {p.labels.shape} do not match"
        )
    return p


def predictions_path(predictions_dir: Path, model: str) -> Path:
    """predictions/efficientnet_b0.npz, predictions/scaling/depth_2x.npz."""
    return Path(predictions_dir) / f"{model}.npz"


# --------------------------------------------------------------------------------------
# the table of the run's models
# --------------------------------------------------------------------------------------


def in_run(row: dict[str, Any], models: Collection[str]) -> bool:
    """Whether a model record belongs to the run whose models are `models` (`effnet.study.study_models`).

    Records of weights that no stage declares any more (e.g. `scaling/depth_8x.json` after
    the targets were cut to [2], which DVC leaves in place) do not, nor do models outside the study.
    """
    return str(row.get("model")) in models


def collect(
    metrics_dir: Path, table: Path, models: Iterable[str], *, log: Callable[[str], Any] = print
) -> list[dict[str, Any]]:
    """Write the CSV `table` of every `metrics_dir/**/<model>.json` of this run (see `in_run`), sorted by model.

    Reads nothing but those small files (no weights, no torch). A record that is not a
    JSON object with the keys of `COLUMNS` is an error naming the file.
    """
    metrics_dir = Path(metrics_dir)
    names = frozenset(models)
    rows, skipped = [], []
    for path in sorted(metrics_dir.glob("**/*.json")):
        if path.name.startswith("."):  # a temporary file of an atomic write under way
            continue
        try:
            row = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not JSON ({error}); rerun its evaluate stage") from None
        if isinstance(row, dict):
            row = {**LATER_COLUMNS, **row}
        missing = [key for key in COLUMNS if key not in row] if isinstance(row, dict) else list(COLUMNS)
        if missing:
            raise ValueError(
                f"{path}: a model record lacks {', '.join(missing)}; rerun its evaluate stage "
                f"(dvc repro evaluate@<model>)"
            )
        (rows if in_run(row, names) else skipped).append(row)
    if skipped:
        log(f"left out records of models that no stage of this run declares: {', '.join(r['model'] for r in skipped)}")
    if not rows:
        raise FileNotFoundError(
            f"{metrics_dir}: no model records (<model>.json) of this run; run some evaluate stages "
            "first (dvc repro evaluate@efficientnet_b0)"
        )
    rows.sort(key=lambda r: str(r["model"]))
    write_csv(table, rows, COLUMNS)
    return rows
