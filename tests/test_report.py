"""REPORT.md and the README's results block, generated from fabricated pipeline outputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from effnet.config import Params
from effnet.evaluate import COLUMNS
from effnet.io import write_csv
from effnet.models import MODEL_NAMES
from effnet.plots import make_plots, read_table
from effnet.report import PAPER_TABLE2, build_report, replace_block, update_readme
from test_plots import write_results

ROOT = Path(__file__).resolve().parents[1]
SEARCH = {"alpha": 1.4, "beta": 1.0, "gamma": 1.2, "constraint": 2.016, "val_top1": 0.3, "flops_ratio": 3.04,
          "candidates": 3, "selected_on": "validation top-1 (raw weights)",
          "paper": {"alpha": 1.2, "beta": 1.1, "gamma": 1.15, "constraint": 1.92027, "val_top1": 0.2, "flops_ratio": 3.05}}
CAM = {"baseline": {"strategy": "baseline", "target": 1.0, "flops_ratio": 1.0, "images": 16, "top1": 0.25,
                    "confidence": 0.2, **{m: {"road_morf": -0.2, "road_lerf": -0.05, "road_combined": 0.075,
                                              "cam_mult_confidence_change": 0.01} for m in ("gradcam", "gradcam++", "random")}}}


def project(root: Path, *, plots: bool = True) -> Path:
    """Fabricated outputs of every stage before the report, the figures drawn from them."""
    write_results(root)
    (root / "metrics" / "search.json").write_text(json.dumps(SEARCH))
    (root / "metrics" / "cam.json").write_text(json.dumps(CAM))
    if plots:
        make_plots(models_table=root / "metrics" / "models.csv", search_table=root / "plots" / "search.csv",
                   cam_table=root / "plots" / "cam_faithfulness.csv", dvclive_dir=root / "dvclive", out_dir=root / "plots",
                   log=lambda *_: None)
        for method in ("gradcam", "gradcam++"):
            (root / "plots" / "cam" / f"{method}.png").parent.mkdir(parents=True, exist_ok=True)
            (root / "plots" / "cam" / f"{method}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


def report(root: Path) -> str:
    return build_report(Params(), models_table=root / "metrics" / "models.csv", search_json=root / "metrics" / "search.json",
                        search_table=root / "plots" / "search.csv", cam_json=root / "metrics" / "cam.json",
                        plots_dir=root / "plots", report_dir=root, commit="0123abc", host="test host", now="2026-01-01")


def test_report_lists_every_model_and_the_comparisons(tmp_path: Path) -> None:
    text = report(project(tmp_path))
    for name in MODEL_NAMES:
        assert f"`{name}`" in text  # the full table of models
    for row in ("| B0 | 4.00 | 0.120 | 50.00 |", "| ResNet-152 | 40.00 | 2.600 | 55.00 |", "| phi=1.5 |"):
        assert row in text  # the summary table, from metrics/models.csv
    assert "| searched (chosen) | 1.4 | 1.0 | 1.2 | 2.016 |" in text and "| paper | 1.2 | 1.1 | 1.15 | 1.920 |" in text
    for top1, params_m, flops in PAPER_TABLE2.values():
        assert f"| {top1:.1f} | {params_m} | {flops} |" in text
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
    assert all(f"`{name}` | not trained" in text for name in MODEL_NAMES)


def test_readme_block(tmp_path: Path) -> None:
    project(tmp_path, plots=False)
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nbefore\n\n<!-- results:start -->\nhand-typed\n<!-- results:end -->\n\nafter\n")
    assert update_readme(readme, tmp_path / "metrics" / "models.csv", tmp_path / "metrics" / "search.json")
    text = readme.read_text()
    assert "hand-typed" not in text and "| B7 | 68.34 | 15.360 | 64.00 |" in text
    assert text.startswith("# title\n\nbefore\n\n<!-- results:start -->\n") and text.endswith("<!-- results:end -->\n\nafter\n")
    assert update_readme(readme, tmp_path / "metrics" / "models.csv", tmp_path / "metrics" / "search.json")
    assert readme.read_text() == text  # idempotent
    assert "This run" not in text  # no params given: the table only

    small = replace(Params(), train=replace(Params().train, epochs=1, train_per_class=15, ema_decay=0.0))
    assert update_readme(readme, tmp_path / "metrics" / "models.csv", tmp_path / "metrics" / "search.json", params=small,
                         now="2026-11-23")
    run = readme.read_text().split("<!-- results:start -->\n", 1)[1]
    assert run.startswith("**This run**: 2026-11-23, evaluated on ")
    assert "**A reduced budget** (1 training epoch, 15 training images per class)" in run
    assert "| B7 | 68.34 | 15.360 | 64.00 |" in run
    assert replace_block("no markers here", "x") is None
    readme.write_text("no markers\n")
    assert not update_readme(readme, tmp_path / "metrics" / "models.csv", tmp_path / "metrics" / "search.json")
    assert readme.read_text() == "no markers\n"


def test_stage(tmp_path: Path) -> None:
    project(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "README.md").write_text("<!-- results:start -->\n<!-- results:end -->\n")
    done = subprocess.run([sys.executable, str(ROOT / "stages" / "report.py")], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "## Results on CIFAR-100" in (tmp_path / "REPORT.md").read_text()
    # the stage leaves README.md (no DVC output) alone; the separate command fills its block and writes nothing else
    assert (tmp_path / "README.md").read_text() == "<!-- results:start -->\n<!-- results:end -->\n"
    report = (tmp_path / "REPORT.md").read_text()
    done = subprocess.run([sys.executable, str(ROOT / "stages" / "report.py"), "--update-readme"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| DenseNet-201 |" in (tmp_path / "README.md").read_text()
    assert (tmp_path / "REPORT.md").read_text() == report
    (tmp_path / "params.yaml").write_text("data: {}\n")
    done = subprocess.run([sys.executable, str(ROOT / "stages" / "report.py")], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.startswith("error: ")


@pytest.mark.parametrize("name", ["efficientnet_phi2", "efficientnet_phi1.5"])
def test_phi_label(tmp_path: Path, name: str) -> None:
    write_results(tmp_path, phi_name=name)
    assert f"| phi={name.removeprefix('efficientnet_phi')} |" in report(tmp_path)
