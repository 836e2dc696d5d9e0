"""effnet/study.py: the one definition of the study, and dvc.yaml's matrices naming the same models (issue 12)."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest
import torch
import yaml

from effnet import study
from effnet.config import PAPER_COEFFICIENTS, NetworkConfig, Params, params_from_dict
from effnet.models import build_model, last_conv_stage, spec_for_name
from effnet.plots import make_plots, read_table
from effnet.results import collect
from test_plots import _model_row, write_results
from test_report import project, report

ROOT = Path(__file__).resolve().parents[1]


def dvc_outputs(prefix: str, suffix: str = "") -> set[str]:
    """The model names under `prefix` (models/ or predictions/) that dvc.yaml's stages write, matrices expanded
    with params.yaml's values (`${scaling.flops_targets}`)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    found = set()
    for stage in stages.values():
        axes = {key: params["scaling"]["flops_targets"] if value == "${scaling.flops_targets}" else value
                for key, value in (stage.get("matrix") or {}).items()}
        assert all(isinstance(v, list) for v in axes.values()), axes  # no other interpolation to resolve here
        for values in itertools.product(*axes.values()) if axes else [()]:
            item = dict(zip(axes, values))
            for out in stage.get("outs", []):
                out = out if isinstance(out, str) else next(iter(out))
                for key, value in item.items():
                    out = out.replace("${item.%s}" % key, str(value))
                if out.startswith(prefix) and out.endswith(suffix):
                    found.add(out.removeprefix(prefix).removesuffix(suffix))
    return found


def test_dvc_yaml_trains_and_evaluates_exactly_the_study() -> None:
    params = params_from_dict(yaml.safe_load((ROOT / "params.yaml").read_text()))
    names = {m.name for m in study.study_models(params)}
    assert dvc_outputs("models/") == names
    assert dvc_outputs("predictions/", ".npz") == names
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages["train"]["matrix"]["model"]) == {m.name for m in study.EFFICIENTNETS}
    assert set(stages["train_baseline"]["matrix"]["model"]) == {m.name for m in study.BASELINES}
    assert set(stages["scale"]["matrix"]["strategy"]) | {"compound"} == set(study.strategy_names())
    assert set(stages["evaluate_scale"]["matrix"]["strategy"]) == set(study.strategy_names())


def test_study_models_follow_params() -> None:
    params = params_from_dict({**yaml.safe_load((ROOT / "params.yaml").read_text()),
                               "model": {"phi": 2.5}})
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
    searched, published = NetworkConfig(efficientnet_scaling="searched"), NetworkConfig(efficientnet_scaling="published")
    assert study.searched_coefficients(searched, path) == (1.3, 1.0, 1.2)
    assert study.searched_coefficients(published, path) is None
    assert study.compound_coefficients(published, tmp_path / "absent.json") == PAPER_COEFFICIENTS
    with pytest.raises(FileNotFoundError, match="run the search stage first"):
        study.compound_coefficients(searched, tmp_path / "absent.json")


FAKE_STRATEGY = study.Strategy("stretch", "stretched", "tab:brown", "v")
FAKE_BASELINE = study.StudyModel("vgg11", "matrix", "vgg11_bn", "VGG-11", "tab:blue", "features", None)


@pytest.fixture
def extended(monkeypatch: pytest.MonkeyPatch) -> None:
    """One more scaling strategy and one more baseline (no paper row), each as the one entry in effnet/study.py."""
    monkeypatch.setattr(study, "STRATEGIES", study.STRATEGIES + (FAKE_STRATEGY,))
    monkeypatch.setattr(study, "BASELINES", study.BASELINES + (FAKE_BASELINE,))


def test_a_new_strategy_and_baseline_reach_evaluate_plots_and_report(extended: None, tmp_path: Path) -> None:
    # the run's models (what collect keeps and cam draws) and their groups
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = params_from_dict({**raw, "scaling": {**raw["scaling"], "flops_targets": [2, 4]},
                               "cam": {**raw["cam"], "flops_target": 4}})
    names = [m.name for m in study.study_models(params)]
    assert "vgg11" in names and "scaling/stretch_2x" in names and "scaling/stretch_4x" in names
    assert study.group_of("vgg11") == "matrix" and study.scaling_role_of("scaling/stretch_4x") == ("stretch", 4.0)
    # the baseline builds from a torchvision builder, with its Grad-CAM layer
    spec = spec_for_name("vgg11")
    assert spec.arch == "vgg11_bn" and spec.resolution == 32
    with torch.device("meta"):
        assert last_conv_stage(build_model(spec)) is not None

    # evaluate's records: collect keeps the new models, drops a stale one
    project(tmp_path)  # write_results draws the strategies from the study, "stretch" included
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
    make_plots(models_table=table, search_table=tmp_path / "plots" / "search.csv",
               cam_table=tmp_path / "plots" / "cam_faithfulness.csv", dvclive_dir=tmp_path / "dvclive",
               out_dir=tmp_path / "plots", log=lambda *_: None)
    with (tmp_path / "plots" / "scaling.csv").open() as f:
        scaling = list(csv.DictReader(f))
    assert "stretch" in scaling[0] and {r["model"] for r in scaling if r["strategy"] == "stretch"} == {
        "scaling/baseline", "scaling/stretch_2x", "scaling/stretch_4x"}
    figure1 = read_table(tmp_path / "plots" / "accuracy_vs_params.csv")
    assert ("VGG-11", "baseline") in {(r["label"], r["family"]) for r in figure1}

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
