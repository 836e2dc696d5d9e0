"""effnet/study.py: the one definition of the study, and dvc.yaml's matrices naming the same models (issue 12)."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from test_plots import _model_row
from test_report import project, report

from effnet import scaling, study
from effnet.cam import maps_stage
from effnet.config import PAPER_COEFFICIENTS, NetworkConfig, Params, params_from_dict
from effnet.models import ModelSpec, build_model, last_conv_stage, published_spec, spec_for_name
from effnet.plots import make_plots, read_table
from effnet.results import collect

ROOT = Path(__file__).resolve().parents[1]


def dvc_stages(root: Path = ROOT) -> dict[str, Any]:
    """dvc.yaml's stages as DVC renders them (its own parser: `vars:` from study.yaml and params.yaml, foreach and
    matrix expanded), by name: train@efficientnet_b0, scale@depth-4, ..."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {stage.name: stage for stage in repo.index.stages}


def dvc_outputs(stages: dict[str, Any], prefix: str, suffix: str = "") -> set[str]:
    """The model names under `prefix` (models/ or predictions/) that `stages` write."""
    paths = {str(out.def_path) for stage in stages.values() for out in stage.outs}
    return {p.removeprefix(prefix).removesuffix(suffix) for p in paths if p.startswith(prefix) and p.endswith(suffix)}


def test_dvc_yaml_trains_and_evaluates_exactly_the_study() -> None:
    params = params_from_dict(yaml.safe_load((ROOT / "params.yaml").read_text()))
    names = {m.name for m in study.study_models(params)}
    stages = dvc_stages()
    assert dvc_outputs(stages, "models/") == names
    assert dvc_outputs(stages, "predictions/", ".npz") == names
    assert dvc_outputs(stages, "cams/", ".npz") == {n for n in names if n.startswith("scaling/")}  # Grad-CAM maps
    assert {n.removeprefix("train@") for n in stages if n.startswith("train@")} == {m.name for m in study.EFFICIENTNETS}
    assert {n.split("@")[1] for n in stages if n.startswith("train_baseline@")} == {m.name for m in study.BASELINES}
    targets = [f"{t:g}" for t in params.scaling.flops_targets]
    assert {n for n in stages if n.startswith(("scale@", "scale_compound@"))} == {
        f"{'scale_compound' if s.coefficients else 'scale'}@{s.name}-{t}" for s in study.STRATEGIES for t in targets
    }
    assert {n for n in stages if n.startswith("evaluate_scale@")} == {
        f"evaluate_scale@{s}-{t}" for s in study.strategy_names() for t in targets
    }
    # the scaling study never waits for the search: compound scaling uses the paper's coefficients
    for name, stage in stages.items():
        if name.startswith(("scale@", "scale_compound@", "scale_b0")):
            assert "metrics/search.json" not in {str(d.def_path) for d in stage.deps}, name


def test_the_study_file_is_what_study_py_holds() -> None:
    data = study.read_study()
    assert study.strategies_of(data) == study.STRATEGIES and study.baselines_of(data) == study.BASELINES
    assert [s.name for s in study.STRATEGIES] == ["depth", "width", "resolution", "compound"]
    assert [s.coefficients for s in study.STRATEGIES] == [False, False, False, True]
    assert set(data["strategies"]) == set(study.strategy_names())  # the YAML merge keys dvc.yaml reads
    assert set(data["evaluated"]) == {m.name for m in study.matrix() + (study.phi_model(),)} | {"scaling/baseline"}


def test_a_broken_study_file_names_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("efficientnets: {}\n")
    with pytest.raises(ValueError, match="missing sections baselines, cifar_anchors_source"):
        study.read_study(path)
    with pytest.raises(FileNotFoundError, match="cannot read the study file"):
        study.read_study(tmp_path / "absent.yaml")


def test_study_models_follow_params() -> None:
    params = params_from_dict({**yaml.safe_load((ROOT / "params.yaml").read_text()), "model": {"phi": 2.5}})
    models = study.study_models(params)
    assert [m.name for m in models[:11]] == list(study.model_names())
    phi = next(m for m in models if m.group == "phi")
    assert (phi.name, phi.label) == ("efficientnet_phi", "phi=2.5")
    scaled = [m for m in models if m.group == "scaling"]
    assert len(scaled) == 1 + 4 * len(params.scaling.flops_targets)
    assert study.scaling_role_of("scaling/resolution_8x") == ("resolution", 8.0)
    assert study.scaling_role_of("scaling/other_8x") is None
    assert study.find("resnet50").paper.top1 == 76.0 and study.label_of("efficientnet_b3") == "B3"


def test_searched_or_published_is_decided_once(tmp_path: Path) -> None:
    path = tmp_path / "search.json"
    path.write_text(json.dumps({"alpha": 1.3, "beta": 1.0, "gamma": 1.2}))
    searched = NetworkConfig(efficientnet_scaling="searched")
    published = NetworkConfig(efficientnet_scaling="published")
    assert study.searched_coefficients(searched, path) == (1.3, 1.0, 1.2)
    assert study.searched_coefficients(published, path) is None
    assert study.compound_coefficients(published, tmp_path / "absent.json") == PAPER_COEFFICIENTS
    with pytest.raises(FileNotFoundError, match="run the search stage first"):
        study.compound_coefficients(searched, tmp_path / "absent.json")


# One more baseline (no paper row) and one more single-dimension strategy, each as its one entry of study.yaml.
FAKE_ENTRIES = {
    "baselines": "  vgg11: {arch: vgg11_bn, label: VGG-11, colour: tab:blue, cam_layer: features}\n",
    "one_dimension": "  stretch: {title: stretched, colour: tab:brown, marker: v}\n",
}


def _stretch(base: ModelSpec, multiplier: float, coefficients: Any, name: str | None) -> ModelSpec:
    """The fake strategy's one function: depth and width together (FLOPs ~ multiplier^1.5)."""
    return replace(base, name=name or base.name, depth=base.depth * multiplier**0.5, width=base.width * multiplier**0.5)


FAKE_SCALING = scaling.Scaling(
    _stretch, lambda base, target, c: (target ** (2 / 3), 1.0, 1.25 * target ** (2 / 3), target ** (2 / 3))
)


def extended_study_file(path: Path) -> Path:
    """study.yaml with FAKE_ENTRIES added to their sections (by text: the file's anchors and merge keys are kept)."""
    text = study.STUDY_FILE.read_text()
    for section, entry in FAKE_ENTRIES.items():
        head = f"{section}: &{section}\n"
        assert text.count(head) == 1, head
        text = text.replace(head, head + entry)
    path.write_text(text)
    return path


@pytest.fixture
def extended(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """effnet.study read from the extended study file; the strategy's row in effnet.scaling.SCALINGS."""
    data = study.read_study(extended_study_file(tmp_path / "study.yaml"))
    monkeypatch.setattr(study, "STRATEGIES", study.strategies_of(data))
    monkeypatch.setattr(study, "BASELINES", study.baselines_of(data))
    monkeypatch.setitem(scaling.SCALINGS, "stretch", FAKE_SCALING)


def test_a_new_strategy_and_baseline_reach_dvc_yaml(tmp_path: Path) -> None:
    """dvc.yaml as DVC renders it with the extended study file: the baseline is trained and evaluated, the strategy
    trained at every target (without the search's coefficients) and evaluated; the plots name neither."""
    from dvc.repo import Repo

    project = tmp_path / "project"
    project.mkdir()
    Repo.init(str(project), no_scm=True).close()
    for name in ("dvc.yaml", "params.yaml"):
        (project / name).write_text((ROOT / name).read_text())
    extended_study_file(project / "study.yaml")
    stages = dvc_stages(project)
    targets = [f"{t:g}" for t in yaml.safe_load((ROOT / "params.yaml").read_text())["scaling"]["flops_targets"]]
    assert {"train_baseline@vgg11", "evaluate@vgg11"} <= set(stages)
    assert {f"scale@stretch-{t}" for t in targets} | {f"evaluate_scale@stretch-{t}" for t in targets} <= set(stages)
    assert {f"cam_maps@stretch-{t}" for t in targets} <= set(stages)
    assert "--strategy stretch --target" in stages[f"scale@stretch-{targets[0]}"].cmd
    assert "metrics/search.json" not in {str(d.def_path) for d in stages[f"scale@stretch-{targets[0]}"].deps}
    assert dvc_outputs(stages, "models/") == dvc_outputs(dvc_stages(), "models/") | {
        "vgg11",
        *(f"scaling/stretch_{t}x" for t in targets),
    }
    # the top-level plots read long tables, which the plots stage fills with whatever models and strategies there are
    # (templates of .dvc/plots/ colour by their model or strategy column): they name none
    plots_yaml = (project / "dvc.yaml").read_text().split("\nplots:\n", 1)[1]
    names = {m.name for m in study.matrix()} | set(study.strategy_names()) | {"vgg11", "stretch"}
    assert not {n for n in names if re.search(rf"\b{re.escape(n)}\b", plots_yaml)}


def test_a_new_strategy_and_baseline_reach_evaluate_plots_and_report(extended: None, tmp_path: Path) -> None:
    # the run's models (what collect keeps and cam draws) and their groups
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = params_from_dict(
        {**raw, "scaling": {**raw["scaling"], "flops_targets": [2, 4]}, "cam": {**raw["cam"], "flops_target": 4}}
    )
    names = [m.name for m in study.study_models(params)]
    assert "vgg11" in names and "scaling/stretch_2x" in names and "scaling/stretch_4x" in names
    assert study.group_of("vgg11") == "matrix" and study.scaling_role_of("scaling/stretch_4x") == ("stretch", 4.0)
    # the strategy's scaling function matches FLOPs like the others; the baseline builds from a torchvision builder
    b0 = published_spec("b0", NetworkConfig(base_resolution=8))
    matched = scaling.match_flops("stretch", 2.0, b0)
    assert matched.spec.depth > b0.depth and matched.spec.width > b0.width and abs(matched.relative_error) < 0.25
    spec = spec_for_name("vgg11")
    assert spec.arch == "vgg11_bn" and spec.resolution == 32
    with torch.device("meta"):
        assert last_conv_stage(build_model(spec)) is not None

    # evaluate's records: collect keeps the new models, drops a stale one
    project(tmp_path)  # write_results draws the strategies from the study, "stretch" included
    for run in ("vgg11", "scaling/stretch_2x"):  # their DVCLive curves
        path = tmp_path / "dvclive" / run / "plots" / "metrics" / "val" / "top1.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("timestamp\tstep\ttop1\n1000\t0\t0.25\n")
    table = tmp_path / "metrics" / "models.csv"
    rows = read_table(table) + [_model_row("vgg11", "matrix", 1.3e8, 7.6e9, 0.6, arch="vgg11_bn")]
    metrics = tmp_path / "metrics" / "models"
    for row in rows + [_model_row("scaling/stretch_8x", "scaling", 1e7, 1e9, 0.4, strategy="stretch", target=8.0)]:
        path = metrics / f"{row['model']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row))
    kept = {r["model"] for r in collect(metrics, table, names, log=lambda *_: None)}
    assert {"vgg11", "scaling/stretch_2x", "scaling/stretch_4x"} <= kept and "scaling/stretch_8x" not in kept

    # plots: the strategy's column and rows in plots/scaling.csv, the baseline's label in Figure 1
    make_plots(
        models_table=table,
        search_table=tmp_path / "plots" / "search.csv",
        cam_table=tmp_path / "plots" / "cam_faithfulness.csv",
        dvclive_dir=tmp_path / "dvclive",
        out_dir=tmp_path / "plots",
        log=lambda *_: None,
    )
    with (tmp_path / "plots" / "scaling.csv").open() as f:
        scaled = list(csv.DictReader(f))
    assert "stretch" in scaled[0] and {r["model"] for r in scaled if r["strategy"] == "stretch"} == {
        "scaling/baseline",
        "scaling/stretch_2x",
        "scaling/stretch_4x",
    }
    figure1 = read_table(tmp_path / "plots" / "accuracy_vs_params.csv")
    assert ("VGG-11", "baseline") in {(r["label"], r["family"]) for r in figure1}
    curves = {r["model"]: r for r in read_table(tmp_path / "plots" / "training_curves.csv")}
    assert curves["vgg11"]["val_top1"] == 25.0 and curves["scaling/stretch_2x"]["epoch"] == 1

    # report: the baseline's rows with '–' for the paper, the strategy in the scaling table and comparisons
    text = report(tmp_path)
    assert "| VGG-11 | – | – | – | 60.00 |" in text  # the paper's Table 2 beside ours
    assert "`vgg11`" in text
    assert "| stretch | " in text
    assert "compound_2x" in text and "stretch_2x" in text


def test_strategy_lookup_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="depth, width, resolution, compound"):
        study.strategy("sideways")


def test_params_default_study() -> None:
    names = [m.name for m in study.study_models(Params())]
    assert names[:8] == [f"efficientnet_b{i}" for i in range(8)] and "scaling/baseline" in names


def test_the_small_study_is_chains_of_dvc_stages_in_priority_order():
    params = params_from_dict(yaml.safe_load((ROOT / "params.yaml").read_text()))
    chains = study.small_study_chains(params)
    listed = set(dvc_stages())
    for chain in chains:  # each chain is a training stage and its evaluate stage, both in dvc.yaml
        assert set(chain.stages) <= listed, chain
        assert chain.stages[1].startswith("evaluate")
        maps = maps_stage(chain.model)  # scripts/small.sh ends a scaling model's chain with its Grad-CAM maps
        assert (maps in listed) if chain.model.startswith("scaling/") else maps is None, chain
    names = [c.name for c in chains]
    assert names[0] == "efficientnet_b0" and names[1] == "scaling-baseline"  # B0 first: the study's first result
    scaled = [c for c in chains if c.model.startswith("scaling/") and c.model != "scaling/baseline"]
    assert len(scaled) == len(params.scaling.flops_targets) * 4  # every strategy at every target
    assert ("scale_compound@compound-3", "evaluate_scale@compound-3") in [c.stages for c in scaled]
    with pytest.raises(ValueError, match="unknown model 'efficientnet_b9'"):
        study.small_study_chains(params, ["efficientnet_b9"])
