"""REPORT.md and the README's results block, generated from fabricated pipeline outputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_plots import write_results

from effnet.config import Params
from effnet.evaluate import COLUMNS
from effnet.io import write_csv
from effnet.plots import make_plots, read_table
from effnet.report import build_report, comparisons, read_run_files, update_pages
from effnet.results import Predictions, save_predictions
from effnet.study import matrix, model_names

ROOT = Path(__file__).resolve().parents[1]
SEARCH = {
    "alpha": 1.4,
    "beta": 1.0,
    "gamma": 1.2,
    "constraint": 2.016,
    "val_top1": 0.3,
    "flops_ratio": 3.04,
    "candidates": 3,
    "selected_on": "validation top-1 (raw weights)",
    "decision": "searched",
    "reason": "a1.4_b1_g1.2 beats the paper's point by +10.00 points",
    "rule": "the written rule",
    "flops_target": 3.0,
    "flops_tolerance": 0.05,
    "seeds": 3,
    "networks_trained": 2,
    "infeasible": [],
    "distinctness": {
        "target": 3.0,
        "candidates": 3,
        "feasible": 3,
        "distinct": 2,
        "material": 2,
        "paper_feasible": True,
        "largest_cluster": 2,
        "depth_min": 1.0,
        "depth_max": 1.81,
        "width_min": 1.0,
        "width_max": 1.44,
        "resolution_min": 1.0,
        "resolution_max": 1.44,
    },
    "networks": [
        {"architecture": "net-a", "val_top1": 0.3, "detectable": 0.021},
        {"architecture": "net-b", "val_top1": 0.2},
    ],
    "paper": {"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "constraint": 1.92027, "val_top1": 0.2, "flops_ratio": 3.05},
}
TARGETS = {
    "flops_tolerance": 0.05,
    "base_resolution": 32,
    "rows": [
        {
            "target": 2.0,
            "candidates": 14,
            "feasible": 13,
            "distinct": 8,
            "material": 4,
            "paper_feasible": True,
            "largest_cluster": 9,
            "depth_min": 1.0,
            "depth_max": 1.4375,
            "width_min": 1.0,
            "width_max": 1.2625,
            "resolution_min": 1.0,
            "resolution_max": 1.1562,
        },
        {
            "target": 4.0,
            "candidates": 14,
            "feasible": 13,
            "distinct": 13,
            "material": 10,
            "paper_feasible": False,
            "largest_cluster": 2,
            "depth_min": 1.0,
            "depth_max": 2.0,
            "width_min": 1.0,
            "width_max": 1.6474,
            "resolution_min": 1.0,
            "resolution_max": 1.5938,
        },
    ],
}
CAM = {
    "baseline": {
        "strategy": "baseline",
        "target": 1.0,
        "flops_ratio": 1.0,
        "images": 16,
        "top1": 0.25,
        "confidence": 0.2,
        **{
            m: {"road_morf": -0.2, "road_lerf": -0.05, "road_combined": 0.075, "cam_mult_confidence_change": 0.01}
            for m in ("gradcam", "gradcam++", "random")
        },
    }
}


def project(root: Path, *, plots: bool = True) -> Path:
    """Fabricated outputs of every stage before the report, the figures drawn from them."""
    write_results(root)
    (root / "metrics" / "search.json").write_text(json.dumps(SEARCH))
    (root / "metrics" / "cam.json").write_text(json.dumps(CAM))
    if plots:
        make_plots(
            models_table=root / "metrics" / "models.csv",
            search_table=root / "plots" / "search.csv",
            cam_table=root / "plots" / "cam_faithfulness.csv",
            dvclive_dir=root / "dvclive",
            out_dir=root / "plots",
            log=lambda *_: None,
        )
        for method in ("gradcam", "gradcam++"):
            (root / "plots" / "cam" / f"{method}.png").parent.mkdir(parents=True, exist_ok=True)
            (root / "plots" / "cam" / f"{method}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


def report(root: Path) -> str:
    return build_report(
        Params(),
        models_table=root / "metrics" / "models.csv",
        search_json=root / "metrics" / "search.json",
        search_table=root / "plots" / "search.csv",
        cam_json=root / "metrics" / "cam.json",
        plots_dir=root / "plots",
        report_dir=root,
        commit="0123abc",
        host="test host",
        now="2026-01-01",
        predictions_dir=root / "predictions",
    )


LABELS = np.random.default_rng(0).integers(0, 100, 1000)


def write_predictions(root: Path, model: str, right: slice, test_set: str = "same images") -> None:
    """A predictions file whose model is right exactly on the images of `right` (of 1,000)."""
    top1 = (LABELS + 1) % 100
    top1[right] = LABELS[right]
    save_predictions(
        root / "predictions" / f"{model}.npz",
        Predictions(top1=top1[None], top1_ema=top1[None], labels=LABELS, test_set=test_set, has_ema=True),
    )


def test_report_lists_every_model_and_the_comparisons(tmp_path: Path) -> None:
    text = report(project(tmp_path))
    for name in model_names():
        assert f"`{name}`" in text  # the full table of models
    for row in ("| B0 | 4.00 | 0.120 | 50.00 |", "| ResNet-152 | 40.00 | 2.600 | 55.00 |", "| phi=1.5 |"):
        assert row in text  # the summary table, from metrics/models.csv
    assert (
        "| taken: the search's winner | 1.4 | 1.0 | 1.2 | 2.016 |" in text
        and "| paper | 1.2 | 1.1 | 1.15 | 1.920 |" in text
    )
    assert (
        "**Decision: searched.** a1.4_b1_g1.2 beats the paper's point by +10.00 points. The rule: the written rule"
    ) in text
    assert "every candidate is B0 really scaled by (alpha, beta, gamma) at phi = 1" not in text  # the stale line
    for paper in (m.paper for m in matrix()):
        assert f"| {paper.top1:.1f} | {paper.params} | {paper.flops} |" in text
    assert "67.9-70.8%" in text and "77.4" in text and "78.5" in text
    assert "`0123abc`" in text and "test host" in text
    assert "| depth | 40.00 (2.00x) | 40.00 (4.00x) |" in text  # the scaling study, FLOPs relative to B0
    assert "0.0750 (-0.200 / -0.050)" in text  # CAM faithfulness: combined (MoRF / LeRF)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "plots/scaling.png" in links and "plots/cam/gradcam.png" in links
    assert all((tmp_path / link).is_file() for link in links)  # relative to the report, all there


def test_untrained_models_are_listed_as_such(tmp_path: Path) -> None:
    project(tmp_path, plots=False)
    table = tmp_path / "metrics" / "models.csv"
    write_csv(table, [r for r in read_table(table) if r["model"] != "resnet152"], COLUMNS)
    text = report(tmp_path)
    assert "| `resnet152` | not trained |" in text and "| ResNet-152 | not trained |" in text
    assert "not drawn (`plots/scaling.png` missing)" in text


def test_report_without_any_results(tmp_path: Path) -> None:
    text = report(tmp_path)
    assert "No search result" in text and "No scaling-study models" in text and "No faithfulness results" in text
    assert all(f"`{name}` | not trained" in text for name in model_names())


def test_readme_block(tmp_path: Path) -> None:
    project(tmp_path, plots=False)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nbefore\n\n<!-- results:start -->\nhand-typed\n<!-- results:end -->\n\nafter\n")
    files = read_run_files(tmp_path)  # no dvc.lock there: params.yaml's defaults
    assert update_pages([readme], files) == [readme]
    text = readme.read_text()
    assert "hand-typed" not in text and "| B7 | 68.34 | 15.360 | 64.00 |" in text
    assert text.startswith("# title\n\nbefore\n\n<!-- results:start -->\n") and text.endswith(
        "<!-- results:end -->\n\nafter\n"
    )
    assert update_pages([readme], files) == [] and readme.read_text() == text  # idempotent
    assert "**This run**: evaluated on " in text and "A reduced budget" not in text  # the full defaults

    small = replace(Params(), train=replace(Params().train, epochs=1, train_per_class=15, ema_decay=0.0))
    assert update_pages([readme], replace(files, params=small)) == [readme]
    run = readme.read_text().split("<!-- results:start -->\n", 1)[1]
    assert run.startswith("**This run**: evaluated on ")  # no date: the same files give the same block
    assert "**A reduced budget** (1 training epoch, 15 training images per class)" in run
    assert "| B7 | 68.34 | 15.360 | 64.00 |" in run
    readme.write_text("no markers\n")
    assert update_pages([readme], files) == [] and readme.read_text() == "no markers\n"


def test_stage(tmp_path: Path) -> None:
    project(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "README.md").write_text("<!-- results:start -->\n<!-- results:end -->\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "report.py")], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "## Results on CIFAR-100" in (tmp_path / "REPORT.md").read_text()
    # the stage leaves README.md (no DVC output) alone; the separate command fills its block and writes nothing else
    assert (tmp_path / "README.md").read_text() == "<!-- results:start -->\n<!-- results:end -->\n"
    report = (tmp_path / "REPORT.md").read_text()
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "report.py"), "--update-readme"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "| DenseNet-201 |" in (tmp_path / "README.md").read_text()
    assert (tmp_path / "REPORT.md").read_text() == report
    (tmp_path / "params.yaml").write_text("data: {}\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "report.py")], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stderr.startswith("error: ")


@pytest.mark.parametrize("name", ["efficientnet_phi2", "efficientnet_phi1.5"])
def test_phi_label(tmp_path: Path, name: str) -> None:
    write_results(tmp_path, phi_name=name)
    assert f"| phi={name.removeprefix('efficientnet_phi')} |" in report(tmp_path)


def test_a_search_result_from_before_the_matched_flops_search_is_said_to_be_one(tmp_path: Path) -> None:
    project(tmp_path, plots=False)
    old = {
        k: SEARCH[k] for k in ("alpha", "beta", "gamma", "constraint", "val_top1", "flops_ratio", "candidates", "paper")
    }
    (tmp_path / "metrics" / "search.json").write_text(json.dumps(old))
    section = report(tmp_path).split("## The compound coefficients", 1)[1].split("\n## ", 1)[0]
    assert "each B0 scaled at phi = 1 (3.04x B0's FLOPs for the one chosen): this result predates" in section
    assert "Decision" not in section


def test_search_scope_from_generated_numbers() -> None:
    from effnet.report import search_scope

    lines = search_scope(SEARCH, TARGETS).splitlines()
    assert len(lines) == 4  # 2x and 4x measured, 3x from the search itself, then the decision
    assert lines[0].startswith(
        "- At 2x B0's FLOPs (B0 at 32 px): 13 of 14 grid points reach the target, building 8 "
        "distinct networks of which 4 differ materially"
    )
    assert "holds 9 coefficient sets" in lines[0] and "the paper's point is feasible" in lines[0]
    assert lines[1].startswith("- At 3x B0's FLOPs: 3 of 3") and "depth 1.00-1.81x" in lines[1]
    assert lines[2].startswith("- At 4x") and "**not** feasible" in lines[2]
    assert lines[3] == (
        "- The search ran at 3x with 3 seed(s) per network and took a searched winner, "
        "(1.4, 1.0, 1.2): "
        "a1.4_b1_g1.2 beats the paper's point by +10.00 points. Differences from the paper's network "
        "smaller than about 2.10 points of validation top-1 (the half-width of each Holm-corrected "
        "interval) could not be detected at this budget."
    )
    assert search_scope({}, None) == ""


def test_readme_block_names_the_papers_coefficients_when_the_search_took_them() -> None:
    from effnet.report import results_block

    assert "Searched coefficients: alpha = 1.4" in results_block([], SEARCH)
    text = results_block([], {**SEARCH, "alpha": 1.2, "beta": 1.1, "gamma": 1.15, "decision": "paper"})
    assert "Coefficients: the paper's (1.2, 1.1, 1.15); the search found no network that beats them" in text
    assert "Searched coefficients" not in text


def test_comparisons_drawn() -> None:
    """Compound against each single dimension per target, each scaled model against the unscaled B0; each
    EfficientNet against the next smaller one of the run and against its nearest baselines."""
    models = [
        {"model": "scaling/compound_2x", "group": "scaling", "strategy": "compound", "target": 2.0},
        {"model": "scaling/depth_2x", "group": "scaling", "strategy": "depth", "target": 2.0},
        # no compound at 4x
        {"model": "scaling/width_4x", "group": "scaling", "strategy": "width", "target": 4.0},
        {"model": "scaling/baseline", "group": "scaling", "strategy": "baseline", "target": 1.0},
        {"model": "efficientnet_b0", "group": "matrix", "params": 5e6, "flops": 4e8},
        {"model": "efficientnet_b4", "group": "matrix", "params": 19e6, "flops": 4.15e9},
        {"model": "efficientnet_b7", "group": "matrix", "params": 66e6, "flops": 37e9},
        {"model": "resnet50", "group": "matrix", "params": 26e6, "flops": 4.1e9},
        {"model": "densenet201", "group": "matrix", "params": 20e6, "flops": 4.3e9},
        {"model": "resnet152", "group": "matrix", "params": 60e6, "flops": 11e9},
    ]
    assert comparisons(models) == [
        ("2x FLOPs", "scaling/compound_2x", "scaling/depth_2x"),
        ("2x FLOPs against unscaled", "scaling/depth_2x", "scaling/baseline"),
        ("2x FLOPs against unscaled", "scaling/compound_2x", "scaling/baseline"),
        ("4x FLOPs against unscaled", "scaling/width_4x", "scaling/baseline"),  # drawn without a compound model
        ("next smaller EfficientNet", "efficientnet_b4", "efficientnet_b0"),  # B1-B3 not in the run
        ("next smaller EfficientNet", "efficientnet_b7", "efficientnet_b4"),
        ("nearest in FLOPs", "efficientnet_b0", "resnet50"),
        ("nearest in parameters", "efficientnet_b0", "densenet201"),
        ("nearest in FLOPs", "efficientnet_b4", "resnet50"),  # 4.1 B is nearer 4.15 B than 4.3 B is
        ("nearest in parameters", "efficientnet_b4", "densenet201"),
        ("nearest in FLOPs and parameters", "efficientnet_b7", "resnet152"),
    ]


def test_paired_table(tmp_path: Path) -> None:
    project(tmp_path, plots=False)
    write_predictions(tmp_path, "scaling/compound_2x", slice(0, 600))
    write_predictions(tmp_path, "scaling/depth_2x", slice(0, 400))  # 200 images right for compound only
    write_predictions(tmp_path, "scaling/width_2x", slice(0, 600))  # the same answers as compound
    write_predictions(tmp_path, "efficientnet_b0", slice(0, 500))
    write_predictions(tmp_path, "resnet50", slice(10, 510))  # 10 images each way
    write_predictions(tmp_path, "scaling/resolution_2x", slice(0, 600), test_set="other images")
    text = report(tmp_path)
    section = text.split("## Paired comparisons on the same test images", 1)[1].split("\n## ", 1)[0]
    # three comparisons in the family (resolution_2x was evaluated on other images): Holm over m = 3
    assert "the 3 comparisons of this table are one family, corrected by Holm's step-down procedure" in section
    assert (
        "| 2x FLOPs | compound_2x | width_2x | 1,000 | 1 | 60.00 | 60.00 | +0.00 | [+0.00, +0.00] "
        "| 97.50% | 1.000 | 0.00 | not distinguishable at this budget |" in section
    )
    # depth: p < 1e-4, the first of Holm's steps, tested at alpha / 3
    depth = re.search(
        r"\| 2x FLOPs \| compound_2x \| depth_2x \| 1,000 \| 1 \| 60.00 \| 40.00 \| \+20.00 \| "
        r"\[\+(\d+\.\d+), \+(\d+\.\d+)\] \| 98.33% \| < 0.0001 \| (\d+\.\d+) \| "
        r"compound_2x better \|",
        section,
    )
    assert depth and 16 < float(depth.group(1)) < 20 < float(depth.group(2)) < 24  # +-2.39 x 1.26 pp around 20
    assert float(depth.group(3)) == pytest.approx((float(depth.group(2)) - float(depth.group(1))) / 2, abs=0.011)
    # Holm stops at the second step: the two left share the Bonferroni level over 2, 97.5%
    b0 = re.search(
        r"\| nearest in FLOPs and parameters \| B0 \| ResNet-50 \| 1,000 \| 1 \| 50.00 \| 50.00 \| "
        r"\+0.00 \| \[-(\d+\.\d+), \+(\d+\.\d+)\] \| 97.50% \| 1.000 \| (\d+\.\d+) \| "
        r"not distinguishable at this budget \|",
        section,
    )
    assert b0 and float(b0.group(1)) > 0 and float(b0.group(2)) > 0
    assert float(b0.group(3)) == pytest.approx((float(b0.group(1)) + float(b0.group(2))) / 2, abs=0.011)
    assert (
        f"2 of 3 comparisons are not distinguishable at this budget; the smallest difference they could have "
        f"detected (the half-width of the corrected interval) is from 0.00 to {b0.group(3)} points" in section
    )
    assert "3 of the comparisons have one seed per model" in section
    assert "compound_2x against resolution_2x: evaluated on different test images" in section
    # models without a predictions file: named once, their comparisons left out, nothing fails
    assert "No per-image predictions (`predictions/<model>.npz`) for " in section
    assert "`scaling/depth_4x`" in section and "`efficientnet_b7`" in section and "`scaling/depth_2x`" not in section
    assert "| 4x FLOPs |" not in section


def test_paired_table_without_any_predictions(tmp_path: Path) -> None:
    """The committed CPU run has none: the section says so and the report is written."""
    project(tmp_path, plots=False)
    text = report(tmp_path)
    assert "No per-image predictions (`predictions/<model>.npz`) for " in text and "| A − B |" not in text


def test_the_readme_s_search_scope_table_is_the_measurement_and_marks_the_searched_target():
    from effnet.report import search_scope_table

    measured = {
        "base_resolution": 32,
        "rows": [
            {
                "target": 4,
                "feasible": 13,
                "candidates": 14,
                "distinct": 13,
                "material": 10,
                "largest_cluster": 2,
                "paper_feasible": False,
            },
            {
                "target": 2,
                "feasible": 13,
                "candidates": 14,
                "distinct": 8,
                "material": 4,
                "largest_cluster": 9,
                "paper_feasible": True,
            },
        ],
    }
    text = search_scope_table({"flops_target": 4}, measured)
    lines = [line for line in text.splitlines() if line.startswith("| ") and "x" in line.split("|")[1]]
    assert text.startswith("Measured, B0 at 32 px")
    assert lines[0].startswith("| 2x | 13 of 14 | 8 | 4 | 9 | placed |")  # sorted by target
    assert lines[1].startswith("| 4x (searched) | 13 of 14 | 13 | 10 | 2 | cannot be placed |")
    assert "No measurement" in search_scope_table({}, None)


def test_the_small_study_names_itself_its_chains_and_its_commits(tmp_path: Path) -> None:
    from effnet.config import load_params
    from effnet.report import (
        chains_block,
        cpu_bench_block,
        cuts_block,
        results_block,
        run_summary,
        times_block,
        tradeoff_block,
    )

    project(tmp_path, plots=False)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    small = load_params(ROOT / "params.yaml", ROOT / "scripts" / "small.yaml")
    files = replace(read_run_files(tmp_path), params=small)
    record = {
        "chain": "efficientnet_b0",
        "stages": ["download", "plan", "train@efficientnet_b0", "evaluate@efficientnet_b0"],
        "commit": "b09b896b54430ee6",
        "code_changed_since_commit": False,
        "estimate_s": 2000,
        "wall_s": 2400,
        "exit_status": 0,
        "load_before": 0.1,
        "load_after": 1.9,
    }
    resumed = dict(
        record, chain="resnet50", wall_s=3000, part_wall_s=[1000, 2000], cpu="AMD EPYC (2 cores, no native bf16)"
    )  # stopped once at its deadline
    files = replace(files, chains=(record, resumed))
    times = times_block(files).splitlines()  # each model's time beside its chain's processor: machines differ
    assert next(line for line in times if line.startswith("| B0 |")).endswith("| not recorded |")
    assert next(line for line in times if line.startswith("| ResNet-50 |")).endswith(
        "| AMD EPYC (2 cores, no native bf16) |"
    )
    table = chains_block(files)
    assert (
        "| efficientnet_b0 | `b09b896b54` | not recorded | 33.3 min | 40.0 min | 1.20 | 0.1 / 1.9 | finished |" in table
    )  # the records before chain.sh named the processor
    assert (
        "| resnet50 | `b09b896b54` | AMD EPYC (2 cores, no native bf16) | 33.3 min | 50.0 min | 1.50 | 0.1 / 1.9 "
        "| finished in 2 parts |"
    ) in table
    assert "Finished chains (2), summed: 1.5 h against the clock's 1.1 h (took / estimate 1.35); 8 of 10" in table
    assert "The longest: resnet50, 50.0 min on AMD EPYC (2 cores, no native bf16)." in table  # the budget is per chain
    assert "| scaling-baseline | – | – | – | – | – | – | not run yet |" in table  # the rest of small_study, in order
    assert table.index("efficientnet_b0") < table.index("scaling-baseline") < table.index("resnet50")
    summary = run_summary(small, files.models, files.chains)
    assert summary.startswith("**This run: the small study**") and "`b09b896b54`" in summary
    assert "10 epochs (1 seed each), the scaling study 3 epochs (2 seeds each)" in summary
    block = results_block(files.models, {"alpha": 1.4, "beta": 1.0, "gamma": 1.1}, published=True)
    assert "paper's published table" in block and "Searched coefficients" not in block
    assert "No CPU benchmark committed" in cpu_bench_block(files) and "No trade-off" in tradeoff_block(files)
    assert "No estimate of the cut parts" in cuts_block(files)
    bench = {
        "command": "bench",
        "torch": "2",
        "cpu": "x",
        "load_average_at_start": 0.1,
        "batch_size": 128,
        "steps": 6,
        "warmup_steps": 2,
        "rows": [
            {"network": "resnet50", "setup": "plain", "ms_per_step": 900.0, "images_per_s": 142.0, "vs_plain": 1.0}
        ],
        "parity": {"resnet50": {"steps": 8, "batches": "real", "bf16_vs_fp32": 0.05, "seed_vs_seed": 0.04}},
    }
    longer = dict(
        bench,
        command="longer",
        load_average_at_start=0.2,
        parity={"resnet50": {"steps": 40, "batches": "real", "bf16_vs_fp32": 0.03, "seed_vs_seed": 0.06}},
    )
    text = cpu_bench_block(replace(files, cpu_bench=bench, cpu_parity=(longer,)))
    assert "- resnet50: over 8 steps on real batches, bf16's losses differ from fp32's" in text
    assert "over 40 steps" in text and "another fp32 seed's by 0.0600 (`longer`, load 0.2 at its start)" in text
    cuts = {
        "device": "cpu",
        "b0_images_per_s": 245.0,
        "cost_exponent": 0.5,
        "chains": [{"chain": "efficientnet_b0", "stages": ["train@efficientnet_b0"], "estimate_s": 3600}],
        "cuts": [{"cut": "efficientnet_b3", "stages": ["train@efficientnet_b3"], "estimate_s": 7200}],
    }
    text = cuts_block(replace(files, cuts=cuts))
    assert "B0 timed at 245 images/s, time growing as FLOPs^0.50" in text and "runs: 1.0 h in all" in text
    assert "| efficientnet_b3 | `train@efficientnet_b3` | 2.0 h | 2.00 |" in text
    report = build_report(
        small,
        models_table=tmp_path / "metrics" / "models.csv",
        search_json=tmp_path / "none.json",
        search_table=tmp_path / "none.csv",
        cam_json=tmp_path / "none.json",
        plots_dir=tmp_path / "plots",
        report_dir=tmp_path,
        commit="abc",
        host="here",
        now="now",
    )
    assert "runs no search" in report and "**A reduced scale** (10 training epochs, 3 scaling-study epochs" in report
    assert "no search (B1-B7 from the published table); the scaling study 3 epochs" in report
    assert "per candidate" not in report
