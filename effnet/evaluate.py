"""Accuracy and cost of every trained network: the numbers behind Table 2 and Figure 1.

One model at a time (`evaluate_one`, the `evaluate@<model>` stages): for the weights file
`models/<model>/model.pt` (`models/efficientnet_phi/`, `models/scaling/<strategy>_<t>x/`) and,
with `train.seeds` > 1, those of its other seeds (`models/<model>/seed<k>/model.pt`),
`evaluate_model` measures, on the validation and the test split, top-1 and top-5 with the
raw and with the EMA weights, each also with horizontal-flip test-time augmentation (the
softmax of the image and of its mirror image, averaged; reported apart, under `_flip` keys,
since the paper's single-crop numbers have none), and the cost: parameters, multiply-adds at
the network's own resolution (`effnet.models.count_flops`: convolutions and linear layers,
as the paper counts FLOPs), inference throughput on the current device, training time.
Accuracies are means over the seeds. It writes the model's two small files (`effnet.results`):
its record `metrics/models/<model>.json` and its predicted class for every test image, per
seed, `predictions/<model>.npz`, which the report's paired comparisons read.

Evaluation is on unaugmented images (`DeviceLoader(train=False)`), every image once, at the
network's resolution (32x32 CIFAR images resized on the device, as in training), in fp32.
This is the first place the test split is read: the search and training select on the
validation split only.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effnet.config import EvaluateConfig
from effnet.data import DeviceLoader, Split, load_meta, load_split, subset_per_class
from effnet.io import ensure_writable, write_together
from effnet.models import count_flops, count_parameters
from effnet.results import COLUMNS, Predictions, accuracy_keys, images_id, predictions_path, save_predictions
from effnet.study import group_of, scaling_role_of
from effnet.weights import load_weights, read_weights

SPLITS = ("val", "test")
SUBSET_SEED = 0  # of the per-class subset when evaluate.images_per_class > 0
WARMUP_BATCHES = 2  # untimed batches before the throughput measurement
_SEED_DIR = re.compile(r"^seed([0-9]+)$")  # models/<model>/seed<k>/model.pt: seed k > 0 of train.seeds


class EvaluationError(RuntimeError):
    """A model cannot be evaluated (e.g. out of memory); the message says what to change."""


@dataclass(frozen=True)
class TrainedModel:
    """One model's weights files (one per seed) and where it sits in the study."""

    model: str  # its directory relative to models/: efficientnet_b0, efficientnet_phi, scaling/depth_2x
    path: Path  # seed 0's weights
    group: str  # 'matrix' | 'phi' | 'scaling' | 'other'
    seeds: tuple[Path, ...] = ()  # every seed's weights, seed 0's first; empty: `path` alone

    @property
    def weights(self) -> tuple[Path, ...]:
        return self.seeds or (self.path,)


def seed_weights(model_dir: Path) -> tuple[Path, ...]:
    """`model_dir/model.pt` (seed 0), then `model_dir/seed1/model.pt`, ... for as long as they exist."""
    paths = [Path(model_dir) / "model.pt"]
    while (path := Path(model_dir) / f"seed{len(paths)}" / "model.pt").is_file():
        paths.append(path)
    return tuple(paths)


def find_models(models_dir: Path) -> list[TrainedModel]:
    """Every model below `models_dir` (a directory with a `model.pt`), sorted by path, with its group and seeds.

    `seed<k>/model.pt` below a model's directory is that model's seed k, not a model.
    """
    models_dir = Path(models_dir)
    found = []
    for path in sorted(models_dir.glob("**/model.pt")):
        if _SEED_DIR.match(path.parent.name) and (path.parent.parent / "model.pt").is_file():
            continue
        model = path.parent.relative_to(models_dir).as_posix()
        found.append(TrainedModel(model, path, group_of(model), seed_weights(path.parent)))
    return found


def trained_model(models_dir: Path, model: str) -> TrainedModel:
    """The model `model` (e.g. 'efficientnet_b0', 'scaling/depth_2x') below `models_dir`, with its seeds."""
    path = Path(models_dir) / model / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such weights file; train the model first (its train stage, "
            f"e.g. dvc repro train@efficientnet_b0)"
        )
    return TrainedModel(model, path, group_of(model), seed_weights(path.parent))


def scaling_role(model: str, payload: dict[str, Any]) -> tuple[str, float] | None:
    """(strategy, FLOPs target) of a scaling-study model: ('baseline', 1.0), ('depth', 2.0), ...

    Read from the weights file's `matched` record when it has one, else from the directory
    name (`baseline`, `<strategy>_<t>x`); None when neither says.
    """
    matched = payload.get("matched")
    if isinstance(matched, dict) and "strategy" in matched:
        return str(matched["strategy"]), float(matched.get("target", 1.0))
    return scaling_role_of(model)


@torch.no_grad()
def predict(
    model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probabilities, flip-averaged probabilities, labels) over `loader`, on the CPU.

    The second is the mean of softmax(model(x)) and softmax(model(x mirrored left-right)):
    flipping the normalised, resized batch equals resizing the flipped image.
    """
    model.eval()
    probs, flipped, labels = [], [], []
    for images, targets in loader:
        p = model(images).float().softmax(dim=1)  # (B, classes)
        p_mirror = model(images.flip(-1)).float().softmax(dim=1)
        probs.append(p.cpu())
        flipped.append(((p + p_mirror) / 2).cpu())
        labels.append(targets.cpu())
    return torch.cat(probs), torch.cat(flipped), torch.cat(labels)


def topk_accuracy(probs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the k highest scores."""
    top = probs.topk(min(k, probs.shape[1]), dim=1).indices
    return float((top == labels.view(-1, 1)).any(dim=1).double().mean())


def split_accuracies(
    model: nn.Module, loader: DeviceLoader, split: str, suffix: str = ""
) -> tuple[dict[str, float], torch.Tensor]:
    """`{split}/top1{suffix}`, `/top5{suffix}` and their `_flip` versions, plus `{split}/images`;
    and the predicted class of every image (single crop, in the loader's order)."""
    probs, flipped, labels = predict(model, loader)
    return {
        f"{split}/top1{suffix}": topk_accuracy(probs, labels, 1),
        f"{split}/top5{suffix}": topk_accuracy(probs, labels, 5),
        f"{split}/top1{suffix}_flip": topk_accuracy(flipped, labels, 1),
        f"{split}/top5{suffix}_flip": topk_accuracy(flipped, labels, 5),
        f"{split}/images": int(len(labels)),
    }, probs.argmax(dim=1)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_throughput(model: nn.Module, *, batch_size: int, batches: int, device: torch.device | str) -> float:
    """Inference images per second: `batches` timed fp32 batches after `WARMUP_BATCHES` untimed ones.

    The input is a fixed random batch at the model's resolution (speed does not depend on
    the pixels); CUDA is synchronised before starting and stopping the clock.
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, model.resolution, model.resolution, generator=generator).to(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    for _ in range(WARMUP_BATCHES):
        model(x)
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(batches):
        model(x)
    _synchronize(device)
    return batches * batch_size / (time.perf_counter() - start)


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


@dataclass(frozen=True, eq=False)
class EvalData:
    """The val and test images evaluated (all, or a seeded per-class subset) and the normalisation."""

    splits: dict[str, Split]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def load_eval_data(data_dir: Path, images_per_class: int = 0) -> EvalData:
    """Val and test of `data_dir`; with `images_per_class` > 0, a seeded stratified subset of each."""
    meta = load_meta(data_dir)
    splits = {}
    for split in SPLITS:
        data = load_split(data_dir, split)
        keep = subset_per_class(data.fine_labels, images_per_class, SUBSET_SEED)
        splits[split] = Split(data.images[keep], data.fine_labels[keep], data.coarse_labels[keep])
    return EvalData(splits, tuple(meta["mean"]), tuple(meta["std"]))


def evaluate_model(
    trained: TrainedModel, data: EvalData, cfg: EvaluateConfig, device: torch.device | str
) -> tuple[dict[str, Any], Predictions]:
    """Every measurement of one model, as a flat dict with the keys of `COLUMNS`, and its test predictions.

    With several seeds each is evaluated; the accuracies are their means, the cost
    (parameters, FLOPs, images/s, training time) is seed 0's.
    """
    device = torch.device(device)
    payload = read_weights(trained.path)
    spec = payload["spec"]
    has_ema = payload.get("ema_state_dict") is not None
    role = scaling_role(trained.model, payload) if trained.group == "scaling" else None
    row: dict[str, Any] = {
        "model": trained.model,
        "name": spec["name"],
        "group": trained.group,
        "strategy": role[0] if role else "",
        "target": role[1] if role else "",
        "arch": spec["arch"],
        "width": spec["width"],
        "depth": spec["depth"],
        "resolution": spec["resolution"],
    }
    payload.pop("state_dict", None), payload.pop("ema_state_dict", None)  # only the record is needed from here on
    model = None

    loaders = {
        split: DeviceLoader(
            s.images,
            s.fine_labels,
            batch_size=cfg.batch_size,
            train=False,
            device=device,
            mean=data.mean,
            std=data.std,
            resolution=spec["resolution"],
        )
        for split, s in data.splits.items()
    }
    per_seed: list[dict[str, float]] = []
    top1: dict[bool, list[np.ndarray]] = {False: [], True: []}  # test predictions per seed: raw, EMA
    try:
        for seed, path in enumerate(trained.weights):
            accuracies: dict[str, Any] = {}
            for ema in (False, True) if has_ema else (False,):
                model = load_weights(path, ema=ema, device=device)
                for split, loader in loaders.items():
                    metrics, predicted = split_accuracies(model, loader, split, "_ema" if ema else "")
                    accuracies.update(metrics)
                    if split == "test":
                        top1[ema].append(predicted.numpy())
                if seed == 0 and not ema:
                    row["params"] = count_parameters(model)
                    row["flops"] = count_flops(model)
            if not has_ema:  # as the trainer logs it: the EMA columns repeat the raw weights
                for split in SPLITS:
                    accuracies.update(
                        {key: accuracies[key.replace("_ema", "")] for key in accuracy_keys(split) if "_ema" in key}
                    )
                top1[True].append(top1[False][-1])
            per_seed.append(accuracies)
            if seed == 0:
                row["throughput_images_per_s"] = measure_throughput(
                    model, batch_size=cfg.batch_size, batches=cfg.throughput_batches, device=device
                )
            model = None
    except torch.cuda.OutOfMemoryError:
        size = f"{spec['resolution']}x{spec['resolution']}"
        raise EvaluationError(
            f"CUDA out of memory evaluating {trained.model} at {size} "
            f"with evaluate.batch_size {cfg.batch_size}; try -S evaluate.batch_size="
            f"{max(1, cfg.batch_size // 2)}"
        ) from None
    finally:
        model = None
    for key in per_seed[0]:
        values = [accuracies[key] for accuracies in per_seed]
        row[key] = values[0] if key.endswith("/images") else float(np.mean(values))
    row["train_time_s"] = float(payload.get("train_time_s", float("nan")))
    row["epochs"] = int(payload.get("train_config", {}).get("epochs", 0)) or len(payload.get("history", []))
    row["has_ema"] = has_ema
    row["device"] = device_name(device)
    row["seeds"] = len(trained.weights)
    test = data.splits["test"]
    predictions = Predictions(
        top1=np.stack(top1[False]),
        top1_ema=np.stack(top1[True]),
        labels=np.asarray(test.fine_labels),
        test_set=images_id(test.fine_labels, test.images),
        has_ema=has_ema,
    )
    return {key: row[key] for key in COLUMNS}, predictions


def evaluate_one(
    trained: TrainedModel,
    data_dir: Path,
    cfg: EvaluateConfig,
    *,
    metrics_dir: Path,
    predictions_dir: Path,
    device: torch.device | str = "cpu",
    log: Any = print,
) -> dict[str, Any]:
    """Evaluate one model (every seed) and write its two small files: `metrics_dir/<model>.json`
    and `predictions_dir/<model>.npz`. Both places are checked for write permission before the
    evaluation starts, and the two files are replaced together once all is measured
    (`effnet.io.write_together`): a full disk or a read-only directory leaves both as they were."""
    prediction_file = predictions_path(predictions_dir, trained.model)
    metrics_file = Path(metrics_dir) / f"{trained.model}.json"
    ensure_writable([prediction_file, metrics_file])
    data = load_eval_data(data_dir, cfg.images_per_class)
    start = time.perf_counter()
    row, predictions = evaluate_model(trained, data, cfg, device)
    write_together(
        [
            (prediction_file, lambda tmp: save_predictions(tmp, predictions)),
            (metrics_file, lambda tmp: tmp.write_text(json.dumps(row, indent=2) + "\n")),
        ]
    )
    seeds = f" (mean of {row['seeds']} seeds)" if row["seeds"] > 1 else ""
    log(
        f"{trained.model}: test top-1 {row['test/top1']:.4f}{seeds} (EMA {row['test/top1_ema']:.4f}, flip "
        f"{row['test/top1_ema_flip']:.4f}), val top-1 {row['val/top1']:.4f}, {row['params'] / 1e6:.2f} M params, "
        f"{row['flops'] / 1e9:.3f} GFLOPs, {row['throughput_images_per_s']:,.0f} img/s  "
        f"[{time.perf_counter() - start:.1f} s]"
    )
    return row
