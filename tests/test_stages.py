"""The search and scaling stages through their scripts, on synthetic data with tiny budgets."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from stages import search as search_stage
from stages import train_phi as phi_stage
from stages import train_scaling as scaling_stage

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def workspace(tmp_path, prepared_data_dir, monkeypatch):
    """A project directory whose data has NO test split: a stage that reads it fails."""
    shutil.copytree(prepared_data_dir, tmp_path / "data")
    (tmp_path / "data/test.npz").unlink()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    smoke = yaml.safe_load((ROOT / "scripts/smoke.yaml").read_text())
    for key, value in smoke.items():
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_search_trains_every_candidate_on_validation_without_test(workspace, capsys):
    args = ["--data", "data", "--out", "metrics/search.json", "--table", "plots/search.csv", "--scratch", "scratch"]
    assert search_stage.main(args) == 0
    chosen = json.loads(Path("metrics/search.json").read_text())
    rows = list(csv.DictReader(Path("plots/search.csv").open()))
    assert len(rows) == 3 and sum(r["chosen"] == "True" for r in rows) == 1
    assert sum(r["paper"] == "True" for r in rows) == 1
    assert all(float(r["flops_ratio"]) > 1.5 for r in rows)  # each candidate really is B0 scaled up
    by_alpha = {r["alpha"]: r for r in rows if r["gamma"] == "1.2"}
    # ceil(repeats * alpha) adds one block per stage for any alpha in (1, 1.25]: at phi = 1,
    # alpha 1.1 and 1.2 build the same network (and, seeded alike, train identically)
    assert by_alpha["1.1"]["params"] == by_alpha["1.2"]["params"] and by_alpha["1.1"]["val_top1"] == by_alpha["1.2"]["val_top1"]
    assert (chosen["alpha"], chosen["beta"], chosen["gamma"]) in {(float(r["alpha"]), float(r["beta"]), float(r["gamma"])) for r in rows}
    # a rerun trains nothing: every candidate is finished under the same settings
    capsys.readouterr()
    assert search_stage.main(args) == 0
    assert capsys.readouterr().out.count("(finished earlier)") == 3


def test_phi_and_scaling_stages(workspace):
    Path("metrics").mkdir()
    Path("metrics/search.json").write_text(json.dumps({"alpha": 1.2, "beta": 1.1, "gamma": 1.15}))
    assert phi_stage.main(["--data", "data", "--out", "models/phi", "--live", "live/phi", "--checkpoints", "ck/phi"]) == 0
    weights = torch.load("models/phi/model.pt", weights_only=True)
    assert weights["spec"]["name"] == "efficientnet_phi1" and weights["spec"]["resolution"] == round(8 * 1.15)
    assert weights["coefficients"] == [1.2, 1.1, 1.15]
    assert not Path("ck/phi").exists()  # checkpoints removed once the weights are saved
    assert Path("live/phi/plots/metrics/val/top1.tsv").is_file()

    assert scaling_stage.main(["--strategy", "width", "--target", "2", "--data", "data", "--out", "models/scaling/width_2x",
                               "--live", "live/width_2x"]) == 0
    matched = torch.load("models/scaling/width_2x/model.pt", weights_only=True)
    assert matched["spec"]["name"] == "width_2x" and matched["spec"]["width"] > 1 and matched["spec"]["depth"] == 1
    assert matched["matched"]["strategy"] == "width" and abs(matched["matched"]["flops_ratio"] - 2) <= 0.5 * 2


def test_unreachable_target_is_a_clear_error(workspace, capsys):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["scaling"]["tolerance"] = 0.001
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert scaling_stage.main(["--strategy", "resolution", "--target", "2", "--data", "data", "--out", "models/r"]) == 1
    assert "scaling.tolerance" in capsys.readouterr().err
    assert not Path("models/r").exists()
