"""The search and scaling stages through their scripts, on synthetic data with tiny budgets."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from effnet import search_run as search_library
from effnet.io import LOCK_NAME
from effnet.scaling import target_dropout
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


def test_search_trains_each_network_once_at_matched_flops_without_test(workspace, capsys, monkeypatch):
    args = ["--data", "data", "--out", "metrics/search.json", "--table", "plots/search.csv", "--scratch", "scratch"]
    # interrupted after the first network: its result stays in the scratch directory
    real_train, calls = search_library.train, []

    def interrupted(*a, **k):
        calls.append(a[0])
        if len(calls) == 2:
            raise KeyboardInterrupt("interrupted")
        return real_train(*a, **k)

    monkeypatch.setattr(search_library, "train", interrupted)
    assert search_stage.main(args) == 1  # the CLI turns Ctrl-C into one line and exit status 1
    assert len(list(Path("scratch").glob("*/*.json"))) == 1
    monkeypatch.setattr(search_library, "train", real_train)
    capsys.readouterr()
    assert search_stage.main(args) == 0  # resumes: the first network's first seed is not trained again
    out = capsys.readouterr().out
    # the smoke profile: 2 networks x search.seeds = 2
    assert out.count("finished earlier") == 1 and "candidate 2/2 seed 2/2" in out and "decision: " in out
    assert not Path("scratch").exists()  # deleted once the outputs are written: a forced rerun retrains

    chosen = json.loads(Path("metrics/search.json").read_text())
    rows = list(csv.DictReader(Path("plots/search.csv").open()))
    params = yaml.safe_load(Path("params.yaml").read_text())["search"]
    target, tolerance = params["flops_target"], params["flops_tolerance"]
    assert len(rows) == 3
    assert sum(r["chosen"] == "True" for r in rows) == 1 and sum(r["paper"] == "True" for r in rows) == 1
    for r in rows:  # every candidate trained (or sharing a trained network) lies within tolerance of the target
        assert r["status"] != "infeasible"
        assert abs(float(r["flops_ratio"]) / target - 1) <= tolerance
    by_alpha = {r["alpha"]: r for r in rows if r["gamma"] == "1.2"}
    # at 8 px alpha 1.1 and 1.2 build the same network at their matched phi: trained once, reported together
    assert by_alpha["1.1"]["architecture"] == by_alpha["1.2"]["architecture"]
    assert [by_alpha["1.1"]["status"], by_alpha["1.2"]["status"]] == ["trained", "same network as a1.1_b1.1_g1.2"]
    assert by_alpha["1.1"]["val_top1"] == by_alpha["1.2"]["val_top1"]
    assert sum(r["status"] == "trained" for r in rows) == 2 and chosen["networks_trained"] == 2
    listed = {(float(r["alpha"]), float(r["beta"]), float(r["gamma"])) for r in rows}
    assert (chosen["alpha"], chosen["beta"], chosen["gamma"]) in listed
    assert chosen["flops_target"] == target and abs(chosen["flops_ratio"] / target - 1) <= tolerance
    if (chosen["alpha"], chosen["gamma"]) == (1.1, 1.2):
        assert chosen["same_network"] == [{"alpha": 1.2, "beta": 1.1, "gamma": 1.2}]
    # the decision, its reason, and each network's interval over 100 validation images and 2 seeds
    assert chosen["decision"] in {"searched", "paper"} and chosen["reason"] and chosen["seeds"] == 2
    if chosen["decision"] == "paper":
        assert (chosen["alpha"], chosen["beta"], chosen["gamma"]) == (1.2, 1.1, 1.15)
    assert len(chosen["networks"]) == 2 and all(n["seeds"] == 2 for n in chosen["networks"])
    assert all(n["val_top1_low"] <= n["val_top1"] <= n["val_top1_high"] for n in chosen["networks"])
    assert sum("distinguishable" in n for n in chosen["networks"]) == 1  # the one compared with the paper's
    trained = [r for r in rows if r["status"] == "trained"]
    assert all(r["val_top1_low"] and r["verdict"] for r in trained)


def test_phi_and_scaling_stages(workspace):
    Path("metrics").mkdir()
    Path("metrics/search.json").write_text(json.dumps({"alpha": 1.2, "beta": 1.1, "gamma": 1.15}))
    assert (
        phi_stage.main(["--data", "data", "--out", "models/phi", "--live", "live/phi", "--checkpoints", "ck/phi"]) == 0
    )
    weights = torch.load("models/phi/model.pt", weights_only=True)
    assert weights["spec"]["name"] == "efficientnet_phi1" and weights["spec"]["resolution"] == round(8 * 1.15)
    assert weights["coefficients"] == [1.2, 1.1, 1.15]
    assert not Path("ck/phi").exists()  # checkpoints removed once the weights are saved
    assert Path("live/phi/plots/metrics/val/top1.tsv").is_file()

    assert (
        scaling_stage.main(
            [
                "--strategy",
                "width",
                "--target",
                "2",
                "--data",
                "data",
                "--out",
                "models/scaling/width_2x",
                "--live",
                "live/width_2x",
            ]
        )
        == 0
    )
    matched = torch.load("models/scaling/width_2x/model.pt", weights_only=True)
    assert matched["spec"]["name"] == "width_2x" and matched["spec"]["width"] > 1 and matched["spec"]["depth"] == 1
    record = matched["matched"]
    assert record["strategy"] == "width" and abs(record["flops_ratio"] - 2) <= 0.5 * 2
    assert record["width"] > 1 and record["depth"] == 1 and record["resolution"] == 1  # as built
    assert record["dropout"] == matched["spec"]["dropout"] == target_dropout(2.0)
    assert record["drop_path_rate"] == matched["spec"]["drop_path_rate"] == 0.2  # train.drop_path_rate

    assert (
        scaling_stage.main(
            ["--strategy", "baseline", "--data", "data", "--out", "models/scaling/baseline", "--live", "live/baseline"]
        )
        == 0
    )
    baseline = torch.load("models/scaling/baseline/model.pt", weights_only=True)
    assert baseline["matched"]["flops_ratio"] == 1.0 and baseline["spec"]["dropout"] == target_dropout(1.0)


def test_a_compound_model_that_is_not_compound_stops_the_stage(workspace, capsys):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["scaling"]["min_change"] = 0.05  # the smoke profile turns the check off: at 8 px 2x is one block deeper
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert scaling_stage.main(["--strategy", "compound", "--target", "2", "--data", "data", "--out", "models/c"]) == 1
    err = capsys.readouterr().err
    assert "not compound as built" in err and "scaling.min_change" in err and "resolution 1.000x" in err
    assert not Path("models/c").exists()


def test_unreachable_target_is_a_clear_error(workspace, capsys):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["scaling"]["tolerance"] = 0.001
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert scaling_stage.main(["--strategy", "resolution", "--target", "2", "--data", "data", "--out", "models/r"]) == 1
    assert "scaling.tolerance" in capsys.readouterr().err
    assert not Path("models/r").exists()


def test_seeds_train_one_network_each_and_a_rerun_keeps_the_finished_ones(
    workspace, prepared_data_dir, monkeypatch, capsys
):
    """train.seeds = 2: models/<m>/model.pt is seed 0, models/<m>/seed1/model.pt seed 1; after an interruption
    in seed 1 (and DVC's removal of the outputs) seed 0 is restored, not retrained; evaluate then reads both."""
    from effnet import experiment as common
    from effnet.results import load_predictions
    from stages import evaluate as evaluate_stage

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["train"]["seeds"] = 2
    Path("params.yaml").write_text(yaml.safe_dump(params))
    Path("metrics").mkdir()
    Path("metrics/search.json").write_text(json.dumps({"alpha": 1.2, "beta": 1.1, "gamma": 1.15}))
    args = ["--data", "data", "--out", "models/efficientnet_phi", "--live", "live/phi", "--checkpoints", "ck/phi"]

    trained = []
    seed_run = common._train_and_save_seed

    def interrupted(spec, cfg, **kwargs):
        if cfg.seed == 1:
            raise KeyboardInterrupt  # killed while training seed 1
        trained.append(cfg.seed)
        return seed_run(spec, cfg, **kwargs)

    monkeypatch.setattr(common, "_train_and_save_seed", interrupted)
    assert phi_stage.main(args) == 1  # the CLI turns Ctrl-C into one line and exit status 1
    first = Path("models/efficientnet_phi/model.pt").read_bytes()
    shutil.rmtree("models"), shutil.rmtree("live")  # what dvc repro does before rerunning the stage

    def recording(spec, cfg, **kw):
        trained.append(cfg.seed)
        return seed_run(spec, cfg, **kw)

    monkeypatch.setattr(common, "_train_and_save_seed", recording)
    capsys.readouterr()
    assert phi_stage.main(args) == 0
    assert trained == [0, 1]  # seed 0 once, before the interruption; seed 1 after
    assert "seed 0: finished earlier, restored" in capsys.readouterr().out
    assert Path("models/efficientnet_phi/model.pt").read_bytes() == first
    assert Path("live/phi/plots/metrics/val/top1.tsv").is_file()
    assert Path("live/phi/seed1/plots/metrics/val/top1.tsv").is_file()
    seeds = [
        torch.load(p, weights_only=True)
        for p in ("models/efficientnet_phi/model.pt", "models/efficientnet_phi/seed1/model.pt")
    ]
    assert [w["train_config"]["seed"] for w in seeds] == [0, 1]
    assert not torch.equal(seeds[0]["state_dict"]["classifier.1.weight"], seeds[1]["state_dict"]["classifier.1.weight"])
    assert not Path("ck/phi_seeds").exists()  # nothing kept once all seeds are saved
    assert [p.name for p in Path("ck/phi").iterdir()] == [LOCK_NAME]  # but the stage's lock (effnet.io.lock_dir)

    # one model's evaluate stage: its record and its predictions, both seeds
    assert evaluate_stage.main(["--model", "efficientnet_phi", "--data", str(prepared_data_dir)]) == 0
    record = json.loads(Path("metrics/models/efficientnet_phi.json").read_text())
    assert record["seeds"] == 2 and record["group"] == "phi" and record["test/images"] == 100
    predictions = load_predictions(Path("predictions/efficientnet_phi.npz"))
    assert predictions.top1.shape == (2, 100)
    assert predictions.correct().mean() == pytest.approx(record["test/top1_ema"])
