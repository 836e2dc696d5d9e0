"""effnet/clock.py and stages/plan.py: the budget, the estimate, the warning on a CPU, the plan files."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from effnet import clock, study
from effnet.config import Params, apply_overrides, load_params, params_from_dict

ROOT = Path(__file__).resolve().parents[1]


def _params(overrides: Path | None = None, **changes: dict) -> Params:
    """params.yaml, with a scripts/*.yaml override file applied as `dvc exp run -S` would, then section changes."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = params_from_dict(apply_overrides(raw, yaml.safe_load(overrides.read_text()) if overrides else {}))
    for section, fields in changes.items():
        params = dataclasses.replace(params, **{section: dataclasses.replace(getattr(params, section), **fields)})
    return params


def test_default_budget() -> None:
    jobs = clock.budget(load_params(ROOT / "params.yaml"))
    by_stage = {stage: [j for j in jobs if j.stage == stage] for stage in {j.stage for j in jobs}}
    assert len(by_stage["search"]) == 14  # the grid of params.yaml: 13 feasible points and the paper's
    assert [j.name for j in by_stage["train"]] == [f"efficientnet_b{i}" for i in range(8)]
    assert len(by_stage["train_baseline"]) == 3 and len(by_stage["train_phi"]) == 1
    assert len(by_stage["scale"]) == 1 + 4 * 3  # B0, then 4 strategies at 3x, 5x, 7x
    train = by_stage["train"][0]
    assert (train.epochs, train.train_images, train.val_images, train.val_passes, train.test_images) == (
        100,
        45_000,
        5_000,
        2,
        15_000,
    )
    assert by_stage["search"][0].test_images == 0  # candidates are not evaluated on test
    # B7: the paper's Table 2 FLOPs over B0's, times train.seeds (3 networks)
    assert by_stage["train"][7].cost == pytest.approx(3 * 37 / 0.39)
    # a search candidate: search.seeds networks at search.flops_target x B0
    assert by_stage["search"][0].cost == pytest.approx(3 * 3.0)


def test_job_work_by_hand() -> None:
    job = clock.Job("x", "train", cost=2.0, epochs=3, train_images=100, val_images=30, val_passes=2, test_images=60)
    assert job.b0_images == pytest.approx(2.0 * (3 * (100 + 30 * 2 / 3) + 60 / 3))


def test_no_ema_means_one_validation_pass() -> None:
    jobs = clock.budget(_params(train={"ema_decay": 0.0}))
    assert {j.val_passes for j in jobs} == {1}


def test_default_run_on_a_cpu_says_days_and_what_to_run_instead() -> None:
    params = load_params(ROOT / "params.yaml")
    lines = clock.report(params, "cpu (2 threads)", 1 / 60.0, is_cpu=True)  # 60 B0 images/s: measured 2026-11-24
    text = "\n".join(lines)
    assert "whole run: about" in text and "days" in lines[-2]
    total_days = sum(j.b0_images for j in clock.budget(params)) / 60.0 / clock.DAY
    assert total_days > 30  # months on two cores, not hours
    assert (
        lines[-1].startswith("warning:")
        and "bash scripts/smoke.sh" in lines[-1]
        and "bash scripts/small.sh" in lines[-1]
    )
    assert "Going on" in lines[-1]  # it warns, it does not refuse
    gpu = clock.report(params, "cuda: H100 x1", 1 / 60.0, is_cpu=False)
    assert not any(line.startswith("warning:") for line in gpu)


def test_smoke_and_cpu_budgets_are_not_days() -> None:
    """The budgets the warning points to are the short ones (at the same timed rate of B0 at their resolution)."""
    params = _params(ROOT / "scripts" / "smoke.yaml")
    # B0's cost per image scales with its pixels: 60 images/s at 32 px
    seconds = (params.network.base_resolution / 32) ** 2 / 60.0
    lines = clock.report(params, "cpu (2 threads)", seconds, is_cpu=True)
    assert not any(line.startswith("warning:") for line in lines)
    # the small study is its chains (study.yaml small_study), not the whole pipeline under its params
    small = _params(ROOT / "scripts" / "small.yaml")
    lines = clock.chain_lines(small, "cpu (2 threads)", 1 / 245.0, exponent=0.9, baseline_costs={"resnet50": 2.0})
    chains = clock.study.small_study_chains(small)
    assert len(lines) == len(chains) + 2 and all(f"chain {c.name} " in "\n".join(lines) for c in chains)
    assert "the small study" in lines[-1] and "days" not in lines[-1]  # hours at B0's 245 images/s at 16 px


def test_stage_budgets_change_only_with_their_own_budget() -> None:
    base = clock.stage_budgets(load_params(ROOT / "params.yaml"))
    assert set(base) == {"search", "train", "scale"} and base["search"]["candidates"] == 14
    assert clock.stage_budgets(_params(model={"phi": 4.0})) == base  # a phi experiment re-runs no other stage
    assert clock.stage_budgets(_params(scaling={"flops_targets": (2.0, 16.0)})) == base  # a new target: no re-run
    epochs = clock.stage_budgets(_params(train={"epochs": 7}))
    assert epochs["train"]["epochs"] == 7 and epochs["search"] == base["search"] and epochs["scale"] == base["scale"]


def test_duration() -> None:
    assert clock.duration(40) == "40 s"
    assert clock.duration(7 * 60) == "7 min"
    assert clock.duration(5 * 3600 + 12 * 60) == "5 h 12 min"
    assert clock.duration(3 * clock.DAY + 4 * 3600) == "3 days 4 h"
    assert clock.duration(214.4 * clock.DAY) == "214 days"


def test_model_line() -> None:
    params = load_params(ROOT / "params.yaml")
    names = ["efficientnet_b0", "efficientnet_b1", "resnet50"]
    line = clock.model_line("efficientnet_b1", names, params, 1 / 60.0)
    assert line.startswith("matrix model 2/3: efficientnet_b1, about ") and "(the 3 together about" in line
    assert "no timing" in clock.model_line("resnet50", names, params, None)


def test_timing_kept_only_for_the_same_device(tmp_path: Path) -> None:
    path = tmp_path / "plan" / "timing.json"
    clock.save_timing(path, "cpu (2 threads)", 0.02, 32)
    assert clock.load_timing(path, "cpu (2 threads)", 32) == pytest.approx(0.02)
    assert clock.load_timing(path, "cuda: H100 x1", 32) is None
    assert clock.load_timing(path, "cpu (2 threads)", 16) is None
    assert clock.load_timing(tmp_path / "none.json", "cpu (2 threads)", 32) is None


def test_time_b0_is_a_real_timing() -> None:
    params = _params(network={"base_resolution": 8})
    _, device = clock.describe_device()
    seconds = clock.time_b0(params, device, steps=1, batch=2)
    assert math.isfinite(seconds) and 0 < seconds < 60


def test_plan_stage_prints_the_clock_and_writes_the_budgets(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["network"]["base_resolution"] = 8  # a cheaper timing; the budget is the default one
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "plan.py"), "--steps", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("clock: device ") and "whole run: about" in done.stdout
    if "cpu" in done.stdout.splitlines()[0]:
        assert "warning:" in done.stdout and "bash scripts/smoke.sh" in done.stdout
    train = json.loads((tmp_path / "plan" / "train.json").read_text())
    assert train == {"base_resolution": 8, "epochs": 100, "train_images": 45_000, "val_images": 5_000, "val_passes": 2}
    assert json.loads((tmp_path / "plan" / "search.json").read_text())["candidates"] == 14
    assert "seconds_per_b0_image" in json.loads((tmp_path / "plan" / "timing.json").read_text())
    (tmp_path / "params.yaml").write_text("data: {}\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "plan.py")], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stderr.startswith("error: ")


def test_cli_bad_params_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "params.yaml").write_text("data: {}\n")
    assert clock.main(["--params", str(tmp_path / "params.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert clock.main(["--params", str(tmp_path / "missing.yaml")]) == 1


def test_the_cost_exponent_scales_every_network_but_b0() -> None:
    params = load_params(ROOT / "params.yaml")
    flat, measured = clock.budget(params), clock.budget(params, exponent=0.4)
    by_name = {j.name: j for j in measured}
    seeds = params.train.seeds  # each model's cost counts its seeds' networks
    assert by_name["efficientnet_b0"].cost == 1.0 * seeds
    assert by_name["efficientnet_b7"].cost == pytest.approx((37 / 0.39) ** 0.4 * seeds)  # 6.2x, not 95x
    candidate = next(j for j in measured if j.stage == "search")
    assert candidate.cost == pytest.approx(params.search.flops_target**0.4 * params.search.seeds)
    assert [j.name for j in flat] == [j.name for j in measured]
    assert clock.cost_exponent(1.0, 1.85, 4.6) == pytest.approx(math.log(1.85) / math.log(4.6))
    assert clock.cost_exponent(1.0, 10.0, 4.6) == 1.0 and clock.cost_exponent(1.0, 0.9, 4.6) == 0.2  # clipped
    line = clock.model_line("efficientnet_b7", list(clock.study.model_names()), params, 1e-3, exponent=0.4)
    assert clock.duration(by_name["efficientnet_b7"].b0_images * 1e-3) in line


def test_the_kept_timing_carries_the_exponent_to_the_model_lines(tmp_path: Path) -> None:
    path = tmp_path / "plan" / "timing.json"
    clock.save_timing(path, "cpu (2 threads)", 0.02, 32, exponent=0.5)
    assert clock.load_exponent(path) == 0.5 and clock.load_exponent(tmp_path / "none.json") == 1.0


@pytest.mark.slow
def test_the_calibrated_clock_predicts_b7_within_2x_on_this_device() -> None:
    # a measured check of the calibration: B0 and B3 timed, B7 predicted from them, then B7 timed
    import torch

    params = _params(ROOT / "scripts" / "smoke.yaml")  # B0 at 8 px, as the smoke run
    device = torch.device("cpu")
    # 5 timed steps each: the median of 2 is the slower step, and one slow step of B0 or B3 (CI's cores are shared)
    # once moved the exponent enough to put B7 at 2.05x its measured time. On shared cores one measurement can
    # still be off (2.44x in one CI run of 2026-12-07; earlier runs passed), so a second, independent one is
    # taken when the first is outside the band: a calibration that is really off fails both.
    for _ in range(2):
        b0 = clock.time_b0(params, device, steps=5, batch=8)
        exponent = clock.measure_cost_exponent(params, device, b0, steps=5, batch=8)
        predicted = b0 * clock.scaled_cost(clock.RELATIVE_COST["efficientnet_b7"], exponent)
        measured = clock.time_b0(params, device, steps=5, batch=8, variant="b7")
        if 0.5 < predicted / measured < 2.0:
            break
    by_flops = b0 * clock.RELATIVE_COST["efficientnet_b7"]
    assert 0.5 < predicted / measured < 2.0, (predicted, measured, exponent)
    assert abs(math.log(predicted / measured)) < abs(math.log(by_flops / measured))  # better than FLOPs alone


def test_every_training_job_names_its_dvc_stage_and_a_chain_is_estimated_from_its_stages() -> None:
    params = load_params(ROOT / "params.yaml")
    stages = {clock.dvc_stage(j) for j in clock.budget(params)}
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list", "--name-only"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    training = {
        s for s in listed if s.split("@")[0] in dvc and s.split("@")[0].startswith(("train", "scale", "search"))
    }
    assert stages == training  # every job is one stage of dvc.yaml, and every training stage one job
    seconds = clock.stages_estimate(params, ["scale_b0"], 1e-3, exponent=0.5)
    b0 = next(j for j in clock.budget(params, 0.5) if j.name == "scaling/baseline")
    assert seconds == pytest.approx(b0.b0_images * 1e-3 + 2 * clock.STAGE_START_S)
    two = clock.stages_estimate(params, ["scale_b0", "scale@depth-3"], 1e-3, exponent=0.5)
    assert two > seconds
    with pytest.raises(ValueError, match="scale@depth-4"):
        clock.stages_estimate(params, ["scale@depth-4"], 1e-3)


def test_baselines_cost_their_timing_not_flops_to_a_power() -> None:
    params = load_params(ROOT / "params.yaml")
    by_name = {j.name: j for j in clock.budget(params, 0.5, {"resnet50": 2.0})}
    assert by_name["resnet50"].cost == pytest.approx(2.0 * params.train.seeds)  # the timed ratio as it is
    assert by_name["resnet152"].cost == pytest.approx(clock.RELATIVE_COST["resnet152"] * params.train.seeds)


def test_the_small_studys_cuts_are_the_training_stages_its_chains_do_not_run_and_the_search() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("small_cuts", ROOT / "scripts" / "small_cuts.py")
    small_cuts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(small_cuts)
    params = _params(ROOT / "scripts" / "small.yaml")
    rows = {r["cut"]: r for r in small_cuts.cut_rows(params, 1e-3, 0.5, {"resnet152": 5.0})}
    run = {stage for chain in study.small_study_chains(params) for stage in chain.stages}
    assert "efficientnet_b3" in rows and "resnet152" in rows and "efficientnet_b0" not in rows
    assert not ({s for r in rows.values() for s in r["stages"]} - {"search"}) & run
    assert rows["resnet152"]["estimate_s"] == pytest.approx(
        clock.stages_estimate(params, ["train_baseline@resnet152"], 1e-3, 0.5, {"resnet152": 5.0})
    )
    full, reduced = (r for name, r in rows.items() if name.startswith("search"))
    assert full["candidates"] == reduced["candidates"] == clock.search_candidates(params)
    assert reduced["estimate_s"] < full["estimate_s"]  # the scaling study's epochs and seeds, below the search's
