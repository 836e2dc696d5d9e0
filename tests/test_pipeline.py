"""The DVC pipeline end to end, as a user drives it, on synthetic data with the smoke budgets.

In a temporary git repository made from the project: `dvc repro` runs every stage;
`dvc exp run -S model.phi=1.5` re-runs only the phi model's chain (train_phi, evaluate@efficientnet_phi)
and the summary (checked from DVC's own output); `dvc exp show` lists the experiment's
metrics; `dvc plots diff` writes the HTML with the expected plots; `dvc status` is clean
afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from effnet.config import apply_overrides
from effnet.synthetic import write_synthetic_archive

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # dvc and torchrun of this environment

pytestmark = pytest.mark.slow


def _project_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def run(cmd: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> str:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "ci",
        "GIT_AUTHOR_EMAIL": "ci@example.com",
        "GIT_COMMITTER_NAME": "ci",
        "GIT_COMMITTER_EMAIL": "ci@example.com",
        **(extra_env or {}),
    }
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-6000:]}"
    return output


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pipeline")
    repo = tmp / "repo"
    for name in _project_files():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    archive = tmp / "cifar-100-python.tar.gz"
    md5 = write_synthetic_archive(archive, train_per_class=10, test_per_class=4)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    apply_overrides(params, yaml.safe_load((repo / "scripts/smoke.yaml").read_text()))
    apply_overrides(params, {"data.url": str(archive), "data.md5": md5})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for leftover in ("dvc.lock",):
        (repo / leftover).unlink(missing_ok=True)
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "project"], repo)
    return repo


def test_repro_then_phi_experiment_then_plots_diff(project):
    repo = project
    # 1. dvc repro runs every stage of dvc.yaml
    output = run(["dvc", "repro"], repo)
    listed = set(run(["dvc", "stage", "list", "--name-only"], repo).split())
    assert stages_run(output) == listed, f"stages that did not run: {listed - stages_run(output)}"
    for path in [
        "metrics/search.json",
        "plots/search.csv",
        "models/efficientnet_b7/model.pt",
        "models/resnet152/model.pt",
        "models/efficientnet_phi/model.pt",
        "models/scaling/compound_2x/model.pt",
        "metrics/models.csv",
        "metrics/models/efficientnet_b7.json",
        "predictions/efficientnet_b7.npz",
        "predictions/scaling/compound_2x.npz",
        "cams/scaling/compound_2x.npz",
        "plots/cam/gradcam.png",
        "REPORT.md",
    ]:
        assert (repo / path).is_file(), path
    # the search's decision with its reason, and the report's corrected comparisons
    search = json.loads((repo / "metrics/search.json").read_text())
    assert search["decision"] in ("searched", "paper") and search["reason"] and search["seeds"] == 2
    assert all(n["val_top1_low"] <= n["val_top1"] <= n["val_top1_high"] for n in search["networks"])
    report = (repo / "REPORT.md").read_text()
    assert f"**Decision: {search['decision']}.**" in report and "| verdict |" in report
    assert "corrected by Holm's step-down procedure" in report and "| corrected interval | confidence |" in report
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "smoke run"], repo)

    # 2. a new phi re-runs the phi model's chain and the summary, no other model's
    output = run(["dvc", "exp", "run", "-n", "phi15", "-S", "model.phi=1.5"], repo)
    ran = stages_run(output)
    assert "train_phi" in ran and "evaluate@efficientnet_phi" in ran
    assert not any(
        s.startswith(("train@", "train_baseline@", "scale", "search", "download", "cam", "evaluate_scale"))
        or s.startswith("evaluate@")
        and s != "evaluate@efficientnet_phi"
        for s in ran
    ), ran
    weights = __import__("torch").load(repo / "models/efficientnet_phi/model.pt", weights_only=True)
    assert weights["spec"]["name"] == "efficientnet_phi1.5"

    # 3. dvc exp show lists the experiment with its metrics
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo))
    text = json.dumps(shown)
    assert "phi15" in text and "metrics/search.json" in text

    # 4. dvc plots diff between the two writes the HTML with the expected plots
    out_dir = repo.parent / "plots_html"
    run(["dvc", "plots", "diff", "HEAD", "phi15", "-o", str(out_dir)], repo)
    html = (out_dir / "index.html").read_text()
    titles = [
        title
        for entry in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]
        if isinstance(entry, dict)
        for title in entry
    ]
    assert len(titles) == 8
    for title in titles:  # every declared plot is rendered, under its dvc.yaml title
        assert title.split(" (")[0] in html, title
    assert "phi15" in html and "plots_cam_gradcam" in html

    # 5. nothing left to run
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo)

    # 6. one chain of the small study as scripts/chain.sh runs it (a profile that retrains B0), resuming a first part
    # that stopped at its deadline: its record says what ran at which commit, beside the clock's estimate of the first
    # part, and sums the parts' times; scripts/small.sh then finds it up to date and keeps its record
    (repo / "chain.yaml").write_text("train.epochs: 2\n")
    data = yaml.safe_load((repo / "params.yaml").read_text())["data"]
    env = {"SMALL_PROFILE": "chain.yaml", "CIFAR100_ARCHIVE": data["url"], "CIFAR100_MD5": data["md5"]}
    stages = ["download", "plan", "train@efficientnet_b0", "evaluate@efficientnet_b0"]
    commit = run(["git", "rev-parse", "HEAD"], repo).strip()
    first = {
        "chain": "efficientnet_b0",
        "stages": stages,
        "commit": commit,
        "code_changed_since_commit": False,
        "profile": "chain.yaml",
        "estimate_s": 7,
        "started": "2026-01-01T00:00:00Z",
        "wall_s": 1000,
        "exit_status": 75,
        "load_before": 0.5,
    }
    (repo / "metrics/chains").mkdir(parents=True, exist_ok=True)
    (repo / "metrics/chains/efficientnet_b0.json").write_text(json.dumps(first))
    output = run(["bash", "scripts/chain.sh", "efficientnet_b0", "-s", *stages], repo, env)
    assert {"train@efficientnet_b0", "evaluate@efficientnet_b0"} <= stages_run(output)
    record = json.loads((repo / "metrics/chains/efficientnet_b0.json").read_text())
    assert record["exit_status"] == 0 and record["stages"] == stages and record["commit"] == commit
    assert record["estimate_s"] == 7 and record["started"] == first["started"] and record["load_before"] == 0.5
    assert len(record["part_wall_s"]) == 2 and record["part_wall_s"][0] == 1000 and record["part_wall_s"][1] > 0
    assert record["wall_s"] == sum(record["part_wall_s"])
    assert record["cpu"].endswith(("native bf16)", "no native bf16)"))  # the machine: chains run on several
    output = run(["bash", "scripts/small.sh", "efficientnet_b0"], repo, env)
    assert "chain efficientnet_b0: every stage was up to date" in output and "Running stage" not in output
    assert json.loads((repo / "metrics/chains/efficientnet_b0.json").read_text()) == record
    # a chain of the scaling study ends with its model's Grad-CAM maps, drawn while its weights exist
    (repo / "metrics/chains/scaling-baseline.json").unlink(missing_ok=True)  # the committed study's record
    output = run(["bash", "scripts/small.sh", "scaling-baseline"], repo, env)
    assert "Running stage" not in output
    assert json.loads((repo / "metrics/chains/scaling-baseline.json").read_text())["stages"] == [
        "download",
        "plan",
        "scale_b0",
        "evaluate@scaling/baseline",
        "cam_maps_b0",
    ]
