"""Class activation maps of the scaling study (paper Figure 7) and how faithful they are.

Figure 7 of the paper shows Grad-CAM maps of B0 scaled four ways to the same FLOPs: deeper,
wider, at a higher resolution, and by the compound rule. Here the same comparison is drawn
on CIFAR-100 test images from the trained weights of the scaling study
(`models/scaling/{baseline, depth_<t>x, width_<t>x, resolution_<t>x, compound_<t>x}`,
t = `cam.flops_target`), one figure per CAM method, through the `grad-cam` package: its
methods, targeting the true class (`ClassifierOutputTarget`) at `last_conv_stage(model)`.

Two steps, so that no step needs the weights of more than one model: `draw_model_maps` (stage
`cam_maps`, in each scaling model's own chain, right after its evaluation) draws one model's maps
and scores their faithfulness into a small committed file, `cams/scaling/<model>.npz`;
`run_cam` (stage `cam`) assembles the figures and the table from those files alone. Weights do
not outlive the machine that trained them here (they stay in its DVC cache), and the study's
chains run on different machines and days.

The paper judges the maps by eye. We add a measure of their quality the paper does not
have: faithfulness, i.e. does the network's confidence in the true class fall when the
pixels a map calls relevant are removed, and stay when the irrelevant ones are? The
package's ROAD metrics (Rong et al., 2022: Remove And Debias, pixels replaced by a noisy
linear imputation of their neighbours; MoRF = most relevant first, LeRF = least relevant
first, averaged over `ROAD_PERCENTILES`; combined = (LeRF - MoRF) / 2, higher is better) and
its CamMultImageConfidenceChange (confidence change when the image is multiplied by the
map) are averaged over `cam.faithfulness_images` seeded test images for every model of the
study, with a random map (the package's RandomCAM) as the floor a method must beat.

All networks take the same normalised 32x32 images: `AtResolution` puts the loader's
bilinear resize to the network's resolution inside the forward pass, so the maps come out
at 32x32 for every model (the package upsamples them to the input size) and ROAD removes
the same 32x32 pixels whatever the resolution, which keeps the models comparable.

pytorch_grad_cam and matplotlib are imported inside the functions that use them, so the
rest of `effnet` runs without them.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from effnet.config import CamConfig
from effnet.data import DeviceLoader, load_meta, load_split
from effnet.evaluate import scaling_role
from effnet.figures import pyplot, save_figure
from effnet.io import write_atomic, write_csv, write_json
from effnet.models import last_conv_stage
from effnet.study import SCALING_BASELINE, scaling_role_of, strategy, strategy_names
from effnet.weights import load_weights, read_weights

METHOD_CLASSES = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "scorecam": "ScoreCAM",
    "random": "RandomCAM",
}
REFERENCE_METHOD = "random"  # random channel weights on the real activations: the floor of the faithfulness table
# The grad-cam package's ROAD percentile p is the share of pixels KEPT: MoRF keeps the pixels whose CAM lies
# below the p-th percentile and imputes the (100 - p)% most relevant; LeRF keeps the p% most relevant and
# imputes the rest. This symmetric set removes 80, 60, 40 and 20% alike; the ROAD paper uses 10..90.
ROAD_PERCENTILES = (20, 40, 60, 80)
FAITHFULNESS_KEYS = ("road_morf", "road_lerf", "road_combined", "cam_mult_confidence_change")
TABLE_COLUMNS = (
    "model",
    "strategy",
    "target",
    "flops_ratio",
    "method",
    *FAITHFULNESS_KEYS,
    "top1",
    "confidence",
    "images",
    "label",
)
DISPLAY_SIZE = 128  # pixels per panel side in the figures
IMAGE_SIZE = 32  # CIFAR's side: the size of every map


class AtResolution(nn.Module):
    """`model` preceded by the resize `DeviceLoader` applies: takes normalised 32x32 images.

    Bilinear, no antialiasing, after normalisation, as in the loader, so the outputs equal
    those of the model on the loader's images at its resolution.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.resolution = model.resolution
        self.spec = model.spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) -> (B, classes)
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(
                x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False, antialias=False
            )
        return self.model(x)


def load_cam_model(path: Path, device: torch.device | str = "cpu") -> AtResolution:
    """The trained network of a weights file (EMA weights when present, as evaluated), taking 32x32 input."""
    return AtResolution(load_weights(path, ema=True, device=device)).eval()


def figure_indices(labels: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """Indices of `rows` test images, each of a different class, drawn with `seed`."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if rows > len(classes):
        raise ValueError(f"cam.figure_images {rows} exceeds the {len(classes)} classes in the test split")
    rng = np.random.default_rng([seed, 0])
    chosen = rng.choice(classes, size=rows, replace=False)
    return np.array([rng.choice(np.flatnonzero(labels == c)) for c in chosen])


def faithfulness_indices(size: int, count: int, seed: int) -> np.ndarray:
    """Sorted indices of `count` (at most `size`) images drawn with `seed`, independently of the figure's."""
    rng = np.random.default_rng([seed, 1])
    return np.sort(rng.choice(size, size=min(count, size), replace=False))


def normalised_images(images: np.ndarray, mean: Any, std: Any, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, 32, 32, 3) -> normalised float (N, 3, 32, 32) on `device`, exactly as the evaluation loader."""
    loader = DeviceLoader(
        images,
        np.zeros(len(images), dtype=np.int64),
        batch_size=max(1, len(images)),
        train=False,
        device=device,
        mean=mean,
        std=std,
        resolution=IMAGE_SIZE,
    )
    return torch.cat([x for x, _ in loader])


@torch.no_grad()
def predict_probabilities(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Softmax of `model` over `images`, batched, on the CPU: (N, classes)."""
    return torch.cat(
        [model(images[i : i + batch_size]).float().softmax(dim=1).cpu() for i in range(0, len(images), batch_size)]
    )


def compute_cams(
    model: AtResolution, images: torch.Tensor, labels: np.ndarray, method: str, batch_size: int = 64
) -> np.ndarray:
    """Maps of `method` for the true classes `labels`: float32 (N, 32, 32) in [0, 1].

    Targets the true class (`ClassifierOutputTarget`) at the last convolutional stage; the
    package normalises each map to [0, 1] and upsamples it to the 32x32 input.
    """
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method not in METHOD_CLASSES:
        raise ValueError(f"unknown CAM method {method!r}; allowed: {', '.join(METHOD_CLASSES)}")
    cam = getattr(pytorch_grad_cam, METHOD_CLASSES[method])(model=model, target_layers=[last_conv_stage(model.model)])
    try:
        maps = []
        for i in range(0, len(images), batch_size):
            targets = [ClassifierOutputTarget(int(c)) for c in labels[i : i + batch_size]]
            maps.append(cam(input_tensor=images[i : i + batch_size], targets=targets))
    finally:
        cam.activations_and_grads.release()  # not `with`: its __exit__ swallows IndexError
    return np.clip(np.concatenate(maps).astype(np.float32), 0.0, 1.0)


def faithfulness(
    model: nn.Module, images: torch.Tensor, labels: np.ndarray, cams: np.ndarray, *, seed: int = 0, batch_size: int = 64
) -> dict[str, float]:
    """Mean ROAD MoRF, LeRF, combined and CamMult confidence change of `cams` (softmax of the true class).

    Each is a change in the true class's probability; MoRF should be negative (removing the
    relevant pixels hurts), LeRF near zero, combined = (LeRF - MoRF) / 2 and the CamMult
    change high for a faithful map. The imputation's noise is seeded with `seed`.
    """
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    metrics = {
        "road_morf": ROADMostRelevantFirstAverage(list(ROAD_PERCENTILES)),
        "road_lerf": ROADLeastRelevantFirstAverage(list(ROAD_PERCENTILES)),
        "cam_mult_confidence_change": CamMultImageConfidenceChange(),
    }
    torch.manual_seed(seed)
    scores: dict[str, list[np.ndarray]] = {key: [] for key in metrics}
    with warnings.catch_warnings():
        # the package converts torch tensors with np.float32(...), which numpy 2 warns about
        warnings.filterwarnings("ignore", message=".*__array_wrap__.*", category=DeprecationWarning)
        for i in range(0, len(images), batch_size):
            targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in labels[i : i + batch_size]]
            for key, metric in metrics.items():
                scores[key].append(
                    np.asarray(
                        metric(images[i : i + batch_size], cams[i : i + batch_size], targets, model), dtype=np.float64
                    ).reshape(-1)
                )
    per_image = {key: np.concatenate(value) for key, value in scores.items()}
    per_image["road_combined"] = (per_image["road_lerf"] - per_image["road_morf"]) / 2
    return {key: float(per_image[key].mean()) for key in FAITHFULNESS_KEYS}


@dataclass(frozen=True)
class ScalingModel:
    model: str  # the leaf name: baseline, depth_4x, ...
    path: Path
    strategy: str  # baseline, depth, width, resolution, compound
    target: float  # multiple of B0's FLOPs aimed at (1 for the baseline)
    flops_ratio: float  # reached (the weights file's `matched` record; the target when absent)


def figure_strategies() -> tuple[str, ...]:
    """The columns of Figure 7: B0, then each strategy of the study (effnet/study.py)."""
    return (SCALING_BASELINE.name,) + strategy_names()


def scaling_model(path: Path, model: str) -> ScalingModel | None:
    """The scaling-study model `model` ('scaling/depth_4x') of the weights file `path`; None if it is not one."""
    payload = read_weights(path)
    role = scaling_role(model, payload)
    if role is None:
        return None
    matched = payload.get("matched") if isinstance(payload.get("matched"), dict) else {}
    return ScalingModel(
        model.rsplit("/", 1)[-1], Path(path), role[0], role[1], float(matched.get("flops_ratio", role[1]))
    )


def maps_stage(model: str) -> str | None:
    """dvc.yaml's stage that draws the maps of `model` ('scaling/baseline' -> cam_maps_b0, 'scaling/depth_4x' ->
    cam_maps@depth-4), or None for a model outside the scaling study: what a chain runs after its evaluate stage."""
    role = scaling_role_of(model) if model.startswith("scaling/") else None
    if role is None:
        return None
    return "cam_maps_b0" if role[0] == SCALING_BASELINE.name else f"cam_maps@{role[0]}-{role[1]:g}"


@dataclass(frozen=True)
class CamImages:
    """The test images every model's maps are drawn on: the figure's rows and the faithfulness set (`cam:`)."""

    figure_indices: np.ndarray
    faithfulness_indices: np.ndarray
    figure: torch.Tensor  # (rows, 3, 32, 32), normalised
    faithful: torch.Tensor  # (cam.faithfulness_images, 3, 32, 32), normalised
    figure_labels: np.ndarray
    faithful_labels: np.ndarray


def cam_images(data_dir: Path, cfg: CamConfig, device: torch.device | str = "cpu") -> CamImages:
    """The seeded figure rows and faithfulness images of `cfg` from the test split of `data_dir`."""
    meta, test = load_meta(data_dir), load_split(data_dir, "test")
    fig_idx = figure_indices(test.fine_labels, cfg.figure_images, cfg.seed)
    faith_idx = faithfulness_indices(len(test), cfg.faithfulness_images, cfg.seed)
    return CamImages(
        fig_idx,
        faith_idx,
        normalised_images(test.images[fig_idx], meta["mean"], meta["std"], device),
        normalised_images(test.images[faith_idx], meta["mean"], meta["std"], device),
        test.fine_labels[fig_idx],
        test.fine_labels[faith_idx],
    )


@dataclass
class Panel:
    """One model's column of the figure."""

    title: str
    cams: np.ndarray | None = None  # (rows, 32, 32)
    probabilities: np.ndarray | None = None  # (rows, classes)


@dataclass
class ModelMaps:
    """One model's share of Figure 7 and of the faithfulness table: what `cams/<model>.npz` holds.

    `cam_maps` writes it from the weights (`draw_model_maps`) in the model's own chain, so that
    the `cam` stage assembles the figure from small committed files, without any weights.
    """

    model: ScalingModel
    title: str  # the column's title in the figure
    entry: dict[str, Any]  # metrics/cam.json's entry: strategy, target, top-1, confidence, faithfulness per method
    figure_indices: np.ndarray
    faithfulness_indices: np.ndarray
    maps: dict[str, np.ndarray]  # method -> (rows, 32, 32) in [0, 1] for the figure's images
    probabilities: np.ndarray  # (rows, classes) for the figure's images


def draw_model_maps(
    m: ScalingModel, images: CamImages, cfg: CamConfig, *, device: torch.device | str = "cpu", batch_size: int = 64
) -> ModelMaps:
    """The maps of `cfg.methods` on the figure's images and the faithfulness of each method (and the random floor)
    on the faithfulness images, from the trained (EMA) weights of `m`."""
    model = load_cam_model(m.path, device)
    probabilities = predict_probabilities(model, images.faithful, batch_size)
    labels = images.faithful_labels
    entry: dict[str, Any] = {
        "strategy": m.strategy,
        "target": m.target,
        "flops_ratio": m.flops_ratio,
        "images": len(labels),
        "top1": float((probabilities.argmax(1).numpy() == labels).mean()),
        "confidence": float(probabilities[np.arange(len(labels)), labels].mean()),
    }
    for method in (*cfg.methods, REFERENCE_METHOD):
        np.random.seed(cfg.seed)  # RandomCAM draws from numpy's global generator
        cams = compute_cams(model, images.faithful, labels, method, batch_size)
        entry[method] = faithfulness(model, images.faithful, labels, cams, seed=cfg.seed, batch_size=batch_size)
    maps = {
        method: compute_cams(model, images.figure, images.figure_labels, method, batch_size) for method in cfg.methods
    }
    return ModelMaps(
        m,
        _column_title(m, model.resolution),
        entry,
        images.figure_indices,
        images.faithfulness_indices,
        maps,
        predict_probabilities(model, images.figure, batch_size).numpy(),
    )


def save_model_maps(path: Path, maps: ModelMaps) -> None:
    """Write `maps` as a compressed .npz (a few KB): the arrays, and the rest as one JSON string."""
    m = maps.model
    record = {
        "model": m.model,
        "strategy": m.strategy,
        "target": m.target,
        "flops_ratio": m.flops_ratio,
        "title": maps.title,
        "entry": maps.entry,
        "methods": list(maps.maps),
    }
    arrays = {f"maps_{i}": a.astype(np.float16) for i, a in enumerate(maps.maps.values())}
    write_atomic(
        Path(path),
        lambda tmp: np.savez_compressed(
            tmp,
            record=np.array(json.dumps(record)),
            figure_indices=maps.figure_indices,
            faithfulness_indices=maps.faithfulness_indices,
            probabilities=maps.probabilities.astype(np.float32),
            **arrays,
        ),
    )


def load_model_maps(path: Path) -> ModelMaps:
    """Read a file of `save_model_maps`; one that is not one raises ValueError naming it and the fix."""
    try:
        with np.load(path, allow_pickle=False) as f:
            record = json.loads(str(f["record"]))
            arrays = {key: f[key] for key in f.files}
        maps = {method: arrays[f"maps_{i}"].astype(np.float32) for i, method in enumerate(record["methods"])}
        model = ScalingModel(
            record["model"], Path(path), record["strategy"], float(record["target"]), float(record["flops_ratio"])
        )
        return ModelMaps(
            model,
            record["title"],
            record["entry"],
            arrays["figure_indices"],
            arrays["faithfulness_indices"],
            maps,
            arrays["probabilities"],
        )
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{path}: not a maps file of the cam_maps stage ({e}); draw it again with `dvc repro` of its cam_maps stage"
        ) from e


def check_maps(maps: ModelMaps, images: CamImages, cfg: CamConfig) -> None:
    """ValueError unless `maps` were drawn on the images and with the methods `cfg` asks for now."""
    same = np.array_equal(maps.figure_indices, images.figure_indices) and np.array_equal(
        maps.faithfulness_indices, images.faithfulness_indices
    )
    missing = [method for method in cfg.methods if method not in maps.maps]
    if not same or missing:
        what = f"methods {', '.join(missing)} missing" if missing else "other images (cam.seed or image counts)"
        raise ValueError(
            f"{maps.model.path}: drawn with {what} than params.yaml `cam:` asks for; draw it again "
            f"with `dvc repro` of its cam_maps stage"
        )


def run_cam(
    maps_dir: Path,
    data_dir: Path,
    cfg: CamConfig,
    *,
    cam_dir: Path,
    metrics_path: Path,
    table_path: Path,
    log: Callable[[str], Any] = print,
    run: Collection[str] | None = None,
) -> dict[str, Any]:
    """Figure 7 per method (`cam_dir/<method>.png`), faithfulness per model and method (`metrics_path`, `table_path`)
    from the maps files `maps_dir/scaling/<model>.npz` (`save_model_maps`), baseline first, then by strategy and target.

    `run`: the names of the run's models (`effnet.study.study_models`); files of no model of the
    run (an earlier run's targets) are left out. A model without a file is drawn as missing;
    without any the table has a header only. Returns the metrics written to `metrics_path`.
    """
    meta = load_meta(data_dir)
    names = meta["fine_label_names"]
    test = load_split(data_dir, "test")
    images = cam_images(data_dir, cfg)
    found = []
    for path in sorted(Path(maps_dir).glob("scaling/*.npz")):
        if run is None or f"scaling/{path.stem}" in run:
            found.append(load_model_maps(path))
            check_maps(found[-1], images, cfg)
    order = {s: i for i, s in enumerate(figure_strategies())}
    found.sort(key=lambda f: (order.get(f.model.strategy, len(order)), f.model.target, f.model.model))

    panels: dict[str, dict[str, Panel]] = {method: {} for method in cfg.methods}
    metrics: dict[str, Any] = {}
    rows = []
    for f in found:
        m = f.model
        if m.strategy == "baseline" or math.isclose(m.target, cfg.flops_target):
            for method in cfg.methods:
                panels[method][m.strategy] = Panel(f.title, f.maps[method], f.probabilities)
        entry = f.entry
        metrics[m.model] = entry
        for method in (*cfg.methods, REFERENCE_METHOD):
            rows.append(
                {
                    "model": m.model,
                    "strategy": m.strategy,
                    "target": m.target,
                    "flops_ratio": m.flops_ratio,
                    "method": method,
                    **entry[method],
                    "top1": entry["top1"],
                    "confidence": entry["confidence"],
                    "images": entry["images"],
                    "label": f"{m.model} {method}",
                }
            )
        log(
            f"{m.model}: faithful-image top-1 {entry['top1']:.3f}; ROAD combined "
            + ", ".join(
                f"{method} {entry[method]['road_combined']:+.4f}" for method in (*cfg.methods, REFERENCE_METHOD)
            )
        )

    cam_dir = Path(cam_dir)
    cam_dir.mkdir(parents=True, exist_ok=True)
    for method in cfg.methods:
        draw_figure(
            cam_dir / f"{method}.png",
            method,
            test.images[images.figure_indices],
            images.figure_labels,
            names,
            panels[method],
            cfg.flops_target,
        )
    write_json(metrics_path, metrics)
    write_csv(table_path, rows, TABLE_COLUMNS)
    return metrics


def _column_title(m: ScalingModel, resolution: int) -> str:
    if m.strategy == "baseline":
        return f"{SCALING_BASELINE.title}\n{resolution} px"
    return f"{strategy(m.strategy).title}\n{m.model}, {resolution} px"


def _upscale(array: np.ndarray, size: int) -> np.ndarray:
    """(H, W) or (H, W, C) float -> (size, size[, C]), bilinear."""
    t = torch.as_tensor(array, dtype=torch.float32)
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    t = F.interpolate(t.unsqueeze(0), size=(size, size), mode="bilinear", align_corners=False)[0]
    return (t[0] if array.ndim == 2 else t.permute(1, 2, 0)).clamp(0, 1).numpy()


def draw_figure(
    path: Path,
    method: str,
    images: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    panels: dict[str, Panel],
    flops_target: float,
) -> None:
    """Figure 7 on CIFAR-100: rows of test images, columns image + the five models, map over the image.

    Each panel is titled with the model's predicted class and its confidence (green when
    right). Images and maps are shown upscaled to DISPLAY_SIZE, bilinearly.
    """
    plt = pyplot()
    columns = figure_strategies()
    rows, cols = len(images), 1 + len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.2 * rows + 0.6), squeeze=False)
    for r in range(rows):
        picture = _upscale(images[r].astype(np.float32) / 255.0, DISPLAY_SIZE)
        ax = axes[r, 0]
        ax.imshow(picture)
        ax.set_title(f"true: {names[labels[r]]}", fontsize=8)
        for c, name in enumerate(columns, start=1):
            ax = axes[r, c]
            panel = panels.get(name)
            if panel is None:
                ax.text(0.5, 0.5, "no maps", ha="center", va="center", fontsize=8, transform=ax.transAxes)
                if r == 0:
                    ax.set_title(f"{strategy(name).title}\n(missing)", fontsize=8)
                continue
            ax.imshow(picture)
            ax.imshow(_upscale(panel.cams[r], DISPLAY_SIZE), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
            predicted = int(panel.probabilities[r].argmax())
            caption = f"{names[predicted]} {100 * panel.probabilities[r, predicted]:.0f}%"
            color = "tab:green" if predicted == labels[r] else "tab:red"
            ax.set_xlabel(caption, fontsize=8, color=color)
            if r == 0:
                ax.set_title(panel.title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"{method} maps of the true class: B0 and B0 scaled to {flops_target:g}x its FLOPs "
        f"(cf. paper Figure 7); label = prediction, confidence",
        fontsize=9,
    )
    fig.tight_layout()
    save_figure(fig, path)
