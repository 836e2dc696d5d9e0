"""Which training stages a run will train, by dvc.lock and the params, and what they cost here.

Read by the plan stage before anything trains, so that `dvc exp run -S model.phi=4` on a
workspace whose dvc.lock was made with other settings says up front that it re-runs the search
and what that costs. dvc.lock is only read. Torch-free.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from effnet import clock, study
from effnet.cli import flatten_params
from effnet.config import Params


def lock_stage(job: clock.Job) -> str:
    """The dvc.yaml stage (as dvc.lock names it) that trains `job`: search, train@efficientnet_b0, scale@depth-4, ..."""
    if job.stage == "search":
        return "search"
    if job.stage in ("train", "train_baseline"):
        return f"{job.stage}@{job.name}"
    if job.stage == "train_phi":
        return "train_phi"
    model = job.name.removeprefix("scaling/")
    if model == "baseline":
        return "scale_b0"
    strategy, target = model.rsplit("_", 1)
    target = target.removesuffix("x")
    compound_rule = {s.name for s in study.STRATEGIES if s.coefficients}  # dvc.yaml's scale_compound matrix
    return f"{'scale_compound' if strategy in compound_rule else 'scale'}@{strategy}-{target}"


def _recorded(entry: dict) -> dict[str, object]:
    """A dvc.lock stage's params, flattened to 'train.lr': 0.2 (DVC records whole sections and single keys)."""
    return flatten_params(((entry or {}).get("params") or {}).get("params.yaml") or {})


def changed_files(root: Path, entry: dict) -> list[str]:
    """The file deps of a dvc.lock stage whose md5 differs from what it recorded (code, mostly; directories and
    missing files are DVC's to judge: a download re-creates the same data)."""
    changed = []
    for dep in (entry or {}).get("deps") or []:
        path, recorded = root / str(dep.get("path", "")), dep.get("md5")
        if not recorded or str(recorded).endswith(".dir") or not path.is_file():
            continue
        if hashlib.md5(path.read_bytes()).hexdigest() != recorded:
            changed.append(str(dep["path"]))
    return changed


def stale_training(lock: Path, params_file: Path, jobs: list[clock.Job]) -> dict[str, str]:
    """{stage: why} for the training stages that DVC will run: absent from `lock`, or recorded with other params or
    code.

    A stage that reads the search's result (the EfficientNets train@efficientnet_* and train_phi)
    re-runs with the search; the scaling study uses the paper's coefficients and does not. A changed
    file dep (code) counts; changed data and commands are DVC's to judge (`dvc status`).
    """
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError):
        stages = {}
    current = flatten_params(yaml.safe_load(params_file.read_text()) or {})
    stale: dict[str, str] = {}
    for name in dict.fromkeys(lock_stage(job) for job in jobs):
        if name not in stages:
            stale[name] = "not in dvc.lock"
            continue
        changed = [
            f"{key} {value!r} -> {current.get(key)!r}"
            for key, value in _recorded(stages[name]).items()
            if current.get(key) != value
        ]
        changed += [f"{path} changed" for path in changed_files(lock.parent, stages[name])]
        if changed:
            stale[name] = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    if "search" in stale:
        for name in dict.fromkeys(lock_stage(job) for job in jobs):
            reads_search = name.startswith("train@efficientnet") or name == "train_phi"
            if reads_search and name not in stale:
                stale[name] = "the search re-runs"
    return stale


def preflight(
    params: Params, params_file: Path, lock: Path, seconds_per_b0_image: float, exponent: float = 1.0
) -> list[str]:
    """The lines that say which training stages will run (by dvc.lock and the params) and what they cost here."""
    jobs = clock.budget(params, exponent)
    stale = stale_training(lock, params_file, jobs)
    if not stale:
        return ["plan: by dvc.lock every training stage is up to date with these params and code (data: dvc status)"]
    cost = {name: 0.0 for name in stale}
    for job in jobs:
        if lock_stage(job) in cost:
            start_s = clock.STAGE_START_S if job.stage != "search" else 0.0
            cost[lock_stage(job)] += job.b0_images * seconds_per_b0_image + start_s
    total = sum(cost.values())
    lines = [
        f"plan: this run trains {len(stale)} stage{'s' if len(stale) != 1 else ''}, about {clock.duration(total)} "
        f"here (by dvc.lock, these params and the code; data or command changes can add more: dvc status):"
    ]
    lines += [f"  {name:<28} ~ {clock.duration(cost[name]):<10} {why}" for name, why in stale.items()]
    return lines
