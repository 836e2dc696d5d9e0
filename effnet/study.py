"""The study as data: every model the pipeline trains, evaluates, draws and reports, listed once.

Three groups of models (README, "What the pipeline does"):
- `matrix`: EfficientNet B0-B7 and the baselines (paper Table 2), one `train`/`train_baseline` item each;
- `phi`: one EfficientNet compound-scaled at `model.phi` (Eq. 3);
- `scaling`: B0 and B0 scaled by each of `STRATEGIES` to each of `scaling.flops_targets` x its
  FLOPs (paper Section 3.2, Figures 3 and 8).

`study_models(params)` is the one list of the run's models that evaluate, collect, cam, plots
and report read; dvc.yaml's matrices name the same models (tests/test_study.py checks it).
`efficientnet_coefficients` makes the one decision "searched or published coefficients".

Torch-free on purpose: the plots and report stages read this module on machines without
weights or a GPU. Specs (`ModelSpec`) are built from these entries in `effnet.models`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effnet.config import PAPER_COEFFICIENTS, NetworkConfig, Params

GROUPS = ("matrix", "phi", "scaling")


@dataclass(frozen=True)
class PaperRow:
    """A row of the paper's Table 2 (ImageNet, 224-600 px), as printed there."""

    top1: float  # %
    params: str  # e.g. '5.3M'
    flops: str  # e.g. '0.39B'


@dataclass(frozen=True)
class Strategy:
    """One way of scaling B0 in the scaling study."""

    name: str  # also the prefix of its models' names: depth_4x
    title: str  # its column title in the Grad-CAM figure (paper Figure 7)
    colour: str  # its line in the scaling figures
    marker: str  # distinct where points coincide


# The scaling study's strategies, in the order of the figures and tables.
STRATEGIES: tuple[Strategy, ...] = (
    Strategy("depth", "deeper", "tab:blue", "s"),
    Strategy("width", "wider", "tab:orange", "^"),
    Strategy("resolution", "higher resolution", "tab:green", "D"),
    Strategy("compound", "compound scaling", "tab:red", "o"),
)
# B0 itself, trained with the study's budget: the first column of Figure 7 and the start of every line.
SCALING_BASELINE = Strategy("baseline", "baseline (B0)", "black", "x")


@dataclass(frozen=True)
class StudyModel:
    """One model of the study."""

    name: str  # its directory below models/ (and metrics/models/, predictions/): efficientnet_b3, scaling/depth_4x
    group: str  # one of GROUPS
    arch: str  # 'efficientnet' or the torchvision builder of a baseline (resnet50)
    label: str  # short name in figures and tables: B3, ResNet-50, phi=1.5, depth_4x
    colour: str  # its colour in the figures
    cam_layer: str  # the submodule Grad-CAM weighs (`effnet.models.cam_layer` resolves it)
    paper: PaperRow | None = None  # its row of the paper's Table 2; None where the paper has none
    variant: str | None = None  # b0..b7 for the matrix's EfficientNets
    strategy: str | None = None  # scaling study: a `Strategy.name` or 'baseline'
    target: float | None = None  # scaling study: the multiple of B0's FLOPs aimed at (1 for B0)
    phi: float | None = None  # the phi model's phi
    cifar_anchor: float | None = None  # public CIFAR-100 test top-1 (%) of this network (CIFAR_ANCHORS_SOURCE)

    @property
    def is_baseline(self) -> bool:
        """A baseline network of the matrix (not an EfficientNet)."""
        return self.arch != "efficientnet"


EFFICIENTNET_LAYER = "features.8"  # the 1x1 head convolution before pooling (stem, 7 stages, head)
_EFFICIENTNET_TABLE2 = {"b0": PaperRow(77.1, "5.3M", "0.39B"), "b1": PaperRow(79.1, "7.8M", "0.70B"),
                        "b2": PaperRow(80.1, "9.2M", "1.0B"), "b3": PaperRow(81.6, "12M", "1.8B"),
                        "b4": PaperRow(82.9, "19M", "4.2B"), "b5": PaperRow(83.6, "30M", "9.9B"),
                        "b6": PaperRow(84.0, "43M", "19B"), "b7": PaperRow(84.3, "66M", "37B")}
EFFICIENTNETS: tuple[StudyModel, ...] = tuple(
    StudyModel(f"efficientnet_{v}", "matrix", "efficientnet", v.upper(), "tab:red", EFFICIENTNET_LAYER, row, variant=v)
    for v, row in _EFFICIENTNET_TABLE2.items())
# CIFAR-style networks (3x3 stride-1 stems) trained 200 epochs on CIFAR-100 (SGD, lr 0.1 step
# schedule, batch 128, weight decay 5e-4): their test top-1 is the `cifar_anchor` of each baseline.
CIFAR_ANCHORS_SOURCE = "https://github.com/weiaicunzai/pytorch-cifar100"
# The baselines of Table 2, CIFAR stems (`effnet.models`); a new one reuses a torchvision builder.
BASELINES: tuple[StudyModel, ...] = (
    StudyModel("resnet50", "matrix", "resnet50", "ResNet-50", "tab:blue", "layer4", PaperRow(76.0, "26M", "4.1B"),
               cifar_anchor=77.4),
    StudyModel("resnet152", "matrix", "resnet152", "ResNet-152", "tab:blue", "layer4", PaperRow(77.8, "60M", "11B"),
               cifar_anchor=77.7),
    StudyModel("densenet201", "matrix", "densenet201", "DenseNet-201", "tab:blue", "features",
               PaperRow(77.2, "20M", "4.3B"), cifar_anchor=78.5),
)
PHI_MODEL = "efficientnet_phi"


def matrix() -> tuple[StudyModel, ...]:
    """B0-B7 then the baselines: the `train` and `train_baseline` matrices of dvc.yaml."""
    return EFFICIENTNETS + BASELINES


def model_names() -> tuple[str, ...]:
    """Names of the matrix (what `stages/train.py --model` accepts)."""
    return tuple(m.name for m in matrix())


def scaled_name(strategy: str, target: float) -> str:
    """The name (and models/scaling/ directory) of B0 scaled by `strategy` to `target` x its FLOPs: 'depth_2x'."""
    return f"{strategy}_{float(target):g}x"


def strategy_names() -> tuple[str, ...]:
    return tuple(s.name for s in STRATEGIES)


def strategy(name: str) -> Strategy:
    """The strategy `name` ('baseline': B0 itself); an unknown name is an error that lists the known ones."""
    for s in (SCALING_BASELINE, *STRATEGIES):
        if s.name == name:
            return s
    raise ValueError(f"unknown scaling strategy {name!r}; allowed: {', '.join(strategy_names())}")


def scaling_models(flops_targets: tuple[float, ...] | list[float]) -> tuple[StudyModel, ...]:
    """B0 (models/scaling/baseline), then every strategy at every target."""
    out = [StudyModel("scaling/baseline", "scaling", "efficientnet", "baseline", SCALING_BASELINE.colour,
                      EFFICIENTNET_LAYER, strategy="baseline", target=1.0)]
    for s in STRATEGIES:
        for target in flops_targets:
            name = scaled_name(s.name, target)
            out.append(StudyModel(f"scaling/{name}", "scaling", "efficientnet", name, s.colour, EFFICIENTNET_LAYER,
                                  strategy=s.name, target=float(target)))
    return tuple(out)


def scaling_role_of(name: str) -> tuple[str, float] | None:
    """(strategy, target) read from a scaling-study name: 'scaling/depth_2x' -> ('depth', 2.0),
    'baseline' -> ('baseline', 1.0); None for any other name."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "baseline":
        return "baseline", 1.0
    strategy, _, target = leaf.rpartition("_")
    if strategy in strategy_names() and target.endswith("x"):
        try:
            return strategy, float(target[:-1])
        except ValueError:
            return None
    return None


def phi_model(phi: float | None = None) -> StudyModel:
    """The `train_phi` model (models/efficientnet_phi), labelled by its phi when known."""
    return StudyModel(PHI_MODEL, "phi", "efficientnet", "phi" if phi is None else f"phi={phi:g}", "tab:purple",
                      EFFICIENTNET_LAYER, phi=phi)


def models_at(flops_targets: tuple[float, ...] | list[float], phi: float | None = None) -> tuple[StudyModel, ...]:
    """The matrix, the phi model (at `phi`) and the scaling study at `flops_targets`."""
    return matrix() + (phi_model(phi),) + scaling_models(flops_targets)


def study_models(params: Params) -> tuple[StudyModel, ...]:
    """The run's models: the matrix, the phi model at `model.phi`, the scaling study at `scaling.flops_targets`."""
    return models_at(params.scaling.flops_targets, params.model.phi)


def find(name: str, models: tuple[StudyModel, ...] | None = None) -> StudyModel | None:
    """The entry named `name` (a directory below models/) among `models` (default: the matrix and the phi model)."""
    for m in models if models is not None else matrix() + (phi_model(),):
        if m.name == name:
            return m
    return None


def group_of(name: str) -> str:
    """'matrix', 'phi', 'scaling' (a directory below models/scaling/) or 'other'."""
    entry = find(name)
    if entry is not None:
        return entry.group
    return "scaling" if name.startswith("scaling/") else "other"


def label_of(model: str, name: str = "") -> str:
    """A short name for a model record: B3, ResNet-50, phi=1.5 (from the spec's `name`), depth_2x."""
    entry = find(model)
    if entry is not None and entry.group == "matrix":
        return entry.label
    if model == PHI_MODEL:
        return f"phi={name.removeprefix(PHI_MODEL)}" if name.startswith(PHI_MODEL) else "phi"
    return model.rsplit("/", 1)[-1]


def cam_layer_of(arch: str) -> str:
    """The Grad-CAM layer of the study's networks of architecture `arch`."""
    if arch == "efficientnet":
        return EFFICIENTNET_LAYER
    for m in BASELINES:
        if m.arch == arch:
            return m.cam_layer
    raise ValueError(f"no Grad-CAM layer for architecture {arch!r}; add its baseline to effnet/study.py BASELINES")


# --------------------------------------------------------------------------------------
# coefficients: searched or published, decided here once
# --------------------------------------------------------------------------------------


def read_coefficients(path: Path) -> tuple[float, float, float]:
    """(alpha, beta, gamma) from the search stage's JSON (keys `alpha`, `beta`, `gamma`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; run the search stage first (dvc repro search), "
                                "or set network.efficientnet_scaling: published")
    try:
        record: Any = json.loads(path.read_text())
        return (float(record["alpha"]), float(record["beta"]), float(record["gamma"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: expected a JSON object with numbers alpha, beta, gamma ({error})") from None


def searched_coefficients(network: NetworkConfig, path: Path | None) -> tuple[float, float, float] | None:
    """The searched (alpha, beta, gamma) from `path` (metrics/search.json) when `network.efficientnet_scaling`
    is 'searched', else None: B0-B7 then come from the published table."""
    if network.efficientnet_scaling != "searched":
        return None
    if path is None:
        raise ValueError("network.efficientnet_scaling: searched needs --coefficients (the search result)")
    return read_coefficients(path)


# The scaling study's compound model uses the paper's coefficients, never the searched ones: it asks
# whether compound scaling beats scaling one dimension, and only a model that changes all three can
# answer. Half of the grid's points leave one dimension unchanged at some target (alpha = 1: depth;
# gamma = 1: resolution), and its targets are chosen where these coefficients land within 2% (params.yaml).
SCALING_COEFFICIENTS = PAPER_COEFFICIENTS


def compound_coefficients(network: NetworkConfig, path: Path | None) -> tuple[float, float, float]:
    """The (alpha, beta, gamma) of the phi model (the scaling study uses `SCALING_COEFFICIENTS`):
    the searched ones, or the paper's (1.2, 1.1, 1.15) under `network.efficientnet_scaling: published`."""
    return searched_coefficients(network, path) or PAPER_COEFFICIENTS
