"""Accuracy and cost of every trained network: the numbers behind Table 2 and Figure 1.

For each weights file under `models/` (`models/<name>/model.pt`, `models/efficientnet_phi/`,
`models/scaling/<strategy>_<t>x/`), `evaluate_model` measures, on the validation and the
test split, top-1 and top-5 with the raw and with the EMA weights, each also with
horizontal-flip test-time augmentation (the softmax of the image and of its mirror image,
averaged; reported apart, under `_flip` keys, since the paper's single-crop numbers have
none), and the cost: parameters, multiply-adds at the network's own resolution
(`effnet.models.count_flops`: convolutions and linear layers, as the paper counts FLOPs),
inference throughput on the current device, training time.

Evaluation is on unaugmented images (`DeviceLoader(train=False)`), every image once, at the
network's resolution (32x32 CIFAR images resized on the device, as in training), in fp32.
This is the first place the test split is read: the search and training select on the
validation split only.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from effnet.config import EvaluateConfig
from effnet.data import DeviceLoader, Split, load_meta, load_split, subset_per_class
from effnet.io import replace_dir, write_csv, write_json
from effnet.models import MODEL_NAMES, count_flops, count_parameters
from effnet.scaling import STRATEGIES, scaled_name
from effnet.train import load_weights, read_weights

SPLITS = ("val", "test")
SUBSET_SEED = 0  # of the per-class subset when evaluate.images_per_class > 0
WARMUP_BATCHES = 2  # untimed batches before the throughput measurement
_SCALED = re.compile(r"^(depth|width|resolution|compound)_([0-9.]+)x$")


def accuracy_keys(split: str) -> list[str]:
    """`val/top1`, `val/top5`, `val/top1_ema`, ..., `val/top5_ema_flip`: every accuracy of one split."""
    return [f"{split}/top{k}{ema}{flip}" for ema in ("", "_ema") for flip in ("", "_flip") for k in (1, 5)]


# Columns of metrics/models.csv, in order; each metrics/models/<model>.json holds the same keys.
COLUMNS: tuple[str, ...] = (
    "model", "name", "group", "strategy", "target", "arch", "width", "depth", "resolution", "params", "flops",
    *accuracy_keys("val"), "val/images", *accuracy_keys("test"), "test/images",
    "throughput_images_per_s", "train_time_s", "epochs", "has_ema", "device",
)


class EvaluationError(RuntimeError):
    """A model cannot be evaluated (e.g. out of memory); the message says what to change."""


@dataclass(frozen=True)
class TrainedModel:
    """One weights file and where it sits in the study."""

    model: str  # its directory relative to models/: efficientnet_b0, efficientnet_phi, scaling/depth_2x
    path: Path
    group: str  # 'matrix' | 'phi' | 'scaling' | 'other'


def find_models(models_dir: Path) -> list[TrainedModel]:
    """Every `model.pt` below `models_dir`, sorted by path, with its group."""
    models_dir = Path(models_dir)
    found = []
    for path in sorted(models_dir.glob("**/model.pt")):
        model = path.parent.relative_to(models_dir).as_posix()
        if model in MODEL_NAMES:
            group = "matrix"
        elif model == "efficientnet_phi":
            group = "phi"
        elif model.startswith("scaling/"):
            group = "scaling"
        else:
            group = "other"
        found.append(TrainedModel(model, path, group))
    return found


def pipeline_models(flops_targets: Iterable[float]) -> list[str]:
    """The model directories below models/ that dvc.yaml trains for these `scaling.flops_targets`.

    A workspace can hold weights that no stage declares any more (e.g. `scaling/depth_8x`
    after the targets were cut to [2]); DVC leaves them in place, and they must not be
    evaluated beside the run's own models.
    """
    return [*MODEL_NAMES, "efficientnet_phi", "scaling/baseline",
            *(f"scaling/{scaled_name(strategy, t)}" for strategy in STRATEGIES for t in flops_targets)]


def scaling_role(model: str, payload: dict[str, Any]) -> tuple[str, float] | None:
    """(strategy, FLOPs target) of a scaling-study model: ('baseline', 1.0), ('depth', 2.0), ...

    Read from the weights file's `matched` record when it has one, else from the directory
    name (`baseline`, `<strategy>_<t>x`); None when neither says.
    """
    matched = payload.get("matched")
    if isinstance(matched, dict) and "strategy" in matched:
        return str(matched["strategy"]), float(matched.get("target", 1.0))
    leaf = model.rsplit("/", 1)[-1]
    if leaf == "baseline":
        return "baseline", 1.0
    m = _SCALED.match(leaf)
    return (m.group(1), float(m.group(2))) if m else None


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def split_accuracies(model: nn.Module, loader: DeviceLoader, split: str, suffix: str = "") -> dict[str, float]:
    """`{split}/top1{suffix}`, `/top5{suffix}` and their `_flip` versions, plus `{split}/images`."""
    probs, flipped, labels = predict(model, loader)
    return {
        f"{split}/top1{suffix}": topk_accuracy(probs, labels, 1),
        f"{split}/top5{suffix}": topk_accuracy(probs, labels, 5),
        f"{split}/top1{suffix}_flip": topk_accuracy(flipped, labels, 1),
        f"{split}/top5{suffix}_flip": topk_accuracy(flipped, labels, 5),
        f"{split}/images": int(len(labels)),
    }


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


def evaluate_model(trained: TrainedModel, data: EvalData, cfg: EvaluateConfig, device: torch.device | str) -> dict[str, Any]:
    """Every measurement of one weights file, as a flat dict with the keys of `COLUMNS`."""
    device = torch.device(device)
    payload = read_weights(trained.path)
    spec = payload["spec"]
    has_ema = payload.get("ema_state_dict") is not None
    role = scaling_role(trained.model, payload) if trained.group == "scaling" else None
    row: dict[str, Any] = {
        "model": trained.model, "name": spec["name"], "group": trained.group,
        "strategy": role[0] if role else "", "target": role[1] if role else "",
        "arch": spec["arch"], "width": spec["width"], "depth": spec["depth"], "resolution": spec["resolution"],
    }
    payload.pop("state_dict", None), payload.pop("ema_state_dict", None)  # only the record is needed from here on
    model = None

    loaders = {split: DeviceLoader(s.images, s.fine_labels, batch_size=cfg.batch_size, train=False, device=device,
                                   mean=data.mean, std=data.std, resolution=spec["resolution"])
               for split, s in data.splits.items()}
    try:
        for ema in ((False, True) if has_ema else (False,)):
            model = load_weights(trained.path, ema=ema, device=device)
            for split, loader in loaders.items():
                row.update(split_accuracies(model, loader, split, "_ema" if ema else ""))
            if not ema:
                row["params"] = count_parameters(model)
                row["flops"] = count_flops(model)
        if not has_ema:  # as the trainer logs it: the EMA columns repeat the raw weights
            for split in SPLITS:
                row.update({key: row[key.replace("_ema", "")] for key in accuracy_keys(split) if "_ema" in key})
        row["throughput_images_per_s"] = measure_throughput(model, batch_size=cfg.batch_size,
                                                            batches=cfg.throughput_batches, device=device)
    except torch.cuda.OutOfMemoryError:
        raise EvaluationError(f"CUDA out of memory evaluating {trained.model} at {spec['resolution']}x{spec['resolution']} "
                              f"with evaluate.batch_size {cfg.batch_size}; try -S evaluate.batch_size="
                              f"{max(1, cfg.batch_size // 2)}") from None
    finally:
        model = None
    row["train_time_s"] = float(payload.get("train_time_s", float("nan")))
    row["epochs"] = int(payload.get("train_config", {}).get("epochs", 0)) or len(payload.get("history", []))
    row["has_ema"] = has_ema
    row["device"] = device_name(device)
    return {key: row[key] for key in COLUMNS}


def evaluate_all(models_dir: Path, data_dir: Path, cfg: EvaluateConfig, *, metrics_dir: Path, table: Path,
                 device: torch.device | str = "cpu", only: Iterable[str] | None = None,
                 log: Any = print) -> list[dict[str, Any]]:
    """Evaluate every model under `models_dir` (those named in `only`, when given); write
    `metrics_dir/<model>.json` and the CSV `table`.

    Both are written only once every model is done (a failure leaves the previous outputs),
    and `metrics_dir` is replaced whole, so no file of a model that is gone survives.
    """
    trained = find_models(models_dir)
    if only is not None:
        wanted = set(only)
        stale = [t.model for t in trained if t.model not in wanted]
        if stale:
            log(f"skipping weights that no stage of this run declares: {', '.join(stale)}")
        trained = [t for t in trained if t.model in wanted]
    if not trained:
        raise FileNotFoundError(f"{models_dir}: no model.pt below it; train some models first (dvc repro train)")
    data = load_eval_data(data_dir, cfg.images_per_class)
    rows = []
    for item in trained:
        start = time.perf_counter()
        row = evaluate_model(item, data, cfg, device)
        rows.append(row)
        log(f"{item.model}: test top-1 {row['test/top1']:.4f} (EMA {row['test/top1_ema']:.4f}, flip "
            f"{row['test/top1_ema_flip']:.4f}), val top-1 {row['val/top1']:.4f}, {row['params'] / 1e6:.2f} M params, "
            f"{row['flops'] / 1e9:.3f} GFLOPs, {row['throughput_images_per_s']:,.0f} img/s  [{time.perf_counter() - start:.1f} s]")
    replace_dir(metrics_dir, lambda tmp: [write_json(tmp / f"{row['model']}.json", row) for row in rows])
    write_csv(table, rows, COLUMNS)
    return rows
