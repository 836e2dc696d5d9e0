"""The study as data: every model the pipeline trains, evaluates, draws and reports, read from `study.yaml`.

Three groups of models (README, "What the pipeline does"):
- `matrix`: EfficientNet B0-B7 and the baselines (paper Table 2), one `train`/`train_baseline` item each;
- `phi`: one EfficientNet compound-scaled at `model.phi` (Eq. 3);
- `scaling`: B0 and B0 scaled by each of `STRATEGIES` to each of `scaling.flops_targets` x its
  FLOPs (paper Section 3.2, Figures 3 and 8).

`study.yaml` lists each model and strategy once; dvc.yaml's `foreach` and `matrix` stages read the
same file through `vars:`, and this module turns it into the constants below, which evaluate,
collect, cam, plots, report, the clock and the GPU recipe read. `study_models(params)` is the one
list of the run's models. `efficientnet_coefficients` makes the one decision "searched or
published coefficients".

Torch-free on purpose: the plots and report stages read this module on machines without
weights or a GPU. Specs (`ModelSpec`) are built from these entries in `effnet.models`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from effnet.config import PAPER_COEFFICIENTS, NetworkConfig, Params

GROUPS = ("matrix", "phi", "scaling")
STUDY_FILE = Path(__file__).resolve().parents[1] / "study.yaml"


@dataclass(frozen=True)
class PaperRow:
    """A row of the paper's Table 2 (ImageNet, 224-600 px), as printed there."""

    top1: float  # %
    params: str  # e.g. '5.3M'
    flops: str  # e.g. '0.39B'


@dataclass(frozen=True)
class Strategy:
    """One way of scaling B0 in the scaling study (its scaling function: `effnet.scaling.SCALINGS`)."""

    name: str  # also the prefix of its models' names: depth_4x
    title: str  # its column title in the Grad-CAM figure (paper Figure 7)
    colour: str  # its line in the scaling figures
    marker: str  # distinct where points coincide
    coefficients: bool = False  # scales by the compound rule (alpha, beta, gamma): dvc.yaml's scale_compound, not scale


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


def read_study(path: Path = STUDY_FILE) -> dict[str, Any]:
    """The study file as a mapping; a missing file or section is an error that names it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise FileNotFoundError(f"{path}: cannot read the study file ({error.strerror})") from None
    sections = (
        "efficientnets",
        "baselines",
        "cifar_anchors_source",
        "phi_model",
        "scaling_baseline",
        "one_dimension",
        "compound_rule",
    )
    missing = [key for key in sections if not isinstance(data, dict) or key not in data]
    if missing:
        raise ValueError(f"{path}: missing sections {', '.join(missing)}; each of {', '.join(sections)} is needed")
    return data


def _paper(entry: dict[str, Any]) -> PaperRow | None:
    row = entry.get("paper")
    return None if row is None else PaperRow(float(row["top1"]), str(row["params"]), str(row["flops"]))


def efficientnets_of(data: dict[str, Any]) -> tuple[StudyModel, ...]:
    """The `efficientnets` of a study file's mapping (`read_study`), in its order."""
    return tuple(
        StudyModel(
            name,
            "matrix",
            "efficientnet",
            e["variant"].upper(),
            "tab:red",
            EFFICIENTNET_LAYER,
            _paper(e),
            variant=e["variant"],
        )
        for name, e in data["efficientnets"].items()
    )


def baselines_of(data: dict[str, Any]) -> tuple[StudyModel, ...]:
    """The `baselines` of a study file's mapping, in its order."""
    return tuple(
        StudyModel(
            name,
            "matrix",
            b["arch"],
            b["label"],
            b["colour"],
            b["cam_layer"],
            _paper(b),
            cifar_anchor=b.get("cifar_anchor"),
        )
        for name, b in data["baselines"].items()
    )


def strategies_of(data: dict[str, Any]) -> tuple[Strategy, ...]:
    """The strategies of a study file's mapping: `one_dimension`, then `compound_rule` (which scale by the
    coefficients)."""
    return tuple(
        Strategy(name, s["title"], s["colour"], str(s["marker"]), coefficients=group == "compound_rule")
        for group in ("one_dimension", "compound_rule")
        for name, s in data[group].items()
    )


EFFICIENTNET_LAYER = "features.8"  # the 1x1 head convolution before pooling (stem, 7 stages, head)
_STUDY = read_study()
EFFICIENTNETS: tuple[StudyModel, ...] = efficientnets_of(_STUDY)
# CIFAR-style networks (3x3 stride-1 stems) trained 200 epochs on CIFAR-100 (SGD, lr 0.1 step
# schedule, batch 128, weight decay 5e-4): their test top-1 is the `cifar_anchor` of each baseline.
CIFAR_ANCHORS_SOURCE = _STUDY["cifar_anchors_source"]
# The baselines of Table 2, CIFAR stems (`effnet.models`); a new one reuses a torchvision builder.
BASELINES: tuple[StudyModel, ...] = baselines_of(_STUDY)
((PHI_MODEL, _PHI),) = _STUDY["phi_model"].items()
# The scaling study's strategies, in the order of the figures and tables.
STRATEGIES: tuple[Strategy, ...] = strategies_of(_STUDY)
# B0 itself, trained with the study's budget: the first column of Figure 7 and the start of every line.
((SCALING_BASELINE_MODEL, _B0),) = _STUDY["scaling_baseline"].items()
SCALING_BASELINE = Strategy(_B0["strategy"], _B0["title"], _B0["colour"], str(_B0["marker"]))


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
    out = [
        StudyModel(
            SCALING_BASELINE_MODEL,
            "scaling",
            "efficientnet",
            SCALING_BASELINE.name,
            SCALING_BASELINE.colour,
            EFFICIENTNET_LAYER,
            strategy=SCALING_BASELINE.name,
            target=1.0,
        )
    ]
    for s in STRATEGIES:
        for target in flops_targets:
            name = scaled_name(s.name, target)
            out.append(
                StudyModel(
                    f"scaling/{name}",
                    "scaling",
                    "efficientnet",
                    name,
                    s.colour,
                    EFFICIENTNET_LAYER,
                    strategy=s.name,
                    target=float(target),
                )
            )
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
    return StudyModel(
        PHI_MODEL,
        "phi",
        "efficientnet",
        "phi" if phi is None else f"phi={phi:g}",
        _PHI["colour"],
        EFFICIENTNET_LAYER,
        phi=phi,
    )


def models_at(flops_targets: tuple[float, ...] | list[float], phi: float | None = None) -> tuple[StudyModel, ...]:
    """The matrix, the phi model (at `phi`) and the scaling study at `flops_targets`."""
    return matrix() + (phi_model(phi),) + scaling_models(flops_targets)


def study_models(params: Params) -> tuple[StudyModel, ...]:
    """The run's models: the matrix, the phi model at `model.phi`, the scaling study at `scaling.flops_targets`."""
    return models_at(params.scaling.flops_targets, params.model.phi)


@dataclass(frozen=True)
class Chain:
    """One model's stages in dvc.yaml, training then evaluation: what `scripts/chain.sh` runs as one unit."""

    name: str  # the model's name with '/' as '-': efficientnet_b0, scaling-baseline, scaling-depth_2x
    model: str  # its directory below models/
    stages: tuple[str, str]  # (training stage, evaluate stage), as `dvc stage list` names them


def chain_of(model: StudyModel) -> Chain:
    """The training and evaluate stages of `model` (dvc.yaml's names for its matrix and foreach items)."""
    if model.group == "scaling" and model.strategy != SCALING_BASELINE.name:
        item = f"{model.strategy}-{model.target:g}"
        train = f"{'scale_compound' if strategy(model.strategy).coefficients else 'scale'}@{item}"
        stages = (train, f"evaluate_scale@{item}")
    elif model.group == "scaling":
        stages = ("scale_b0", f"evaluate@{model.name}")
    elif model.group == "phi":
        stages = ("train_phi", f"evaluate@{model.name}")
    else:
        stages = (f"{'train_baseline' if model.is_baseline else 'train'}@{model.name}", f"evaluate@{model.name}")
    return Chain(model.name.replace("/", "-"), model.name, stages)


def small_study_chains(params: Params, entries: list[str] | None = None) -> tuple[Chain, ...]:
    """The small study's chains in priority order (study.yaml `small_study`; `scaling` expands to the scaling
    study at `scaling.flops_targets`). An entry that names no model is a ValueError listing the allowed ones."""
    out = []
    for entry in _STUDY["small_study"] if entries is None else entries:
        if entry == "scaling":
            out += [chain_of(m) for m in scaling_models(params.scaling.flops_targets)]
            continue
        model = find(entry)
        if model is None:
            raise ValueError(
                f"study.yaml small_study: unknown model {entry!r}; allowed: scaling, "
                f"{', '.join(m.name for m in matrix() + (phi_model(),))}"
            )
        out.append(chain_of(model))
    return tuple(out)


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
    raise ValueError(f"no Grad-CAM layer for architecture {arch!r}; add its baseline to study.yaml (baselines)")


# --------------------------------------------------------------------------------------
# coefficients: searched or published, decided here once
# --------------------------------------------------------------------------------------


def read_coefficients(path: Path) -> tuple[float, float, float]:
    """(alpha, beta, gamma) from the search stage's JSON (keys `alpha`, `beta`, `gamma`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file; run the search stage first (dvc repro search), "
            "or set network.efficientnet_scaling: published"
        )
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
