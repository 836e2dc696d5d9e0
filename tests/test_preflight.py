"""effnet/preflight.py: which training stages a run will train, by dvc.lock and the params, and their cost."""

from __future__ import annotations

from pathlib import Path

import yaml

from effnet import clock, preflight
from effnet.config import load_params

ROOT = Path(__file__).resolve().parents[1]


def _lock_of(params_file: Path, stages: list[str], **recorded_changes: object) -> dict:
    """A dvc.lock recording every stage in `stages` with the values of `params_file`, except `recorded_changes`."""
    flat = {}

    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(yaml.safe_load(params_file.read_text()))
    flat.update({k.replace("__", "."): v for k, v in recorded_changes.items()})

    def own(name: str) -> dict:  # as dvc.yaml lists them: model only for train_phi, search only for the search
        return {
            k: v
            for k, v in flat.items()
            if (not k.startswith("model.") or name == "train_phi") and (not k.startswith("search.") or name == "search")
        }

    return {"schema": "2.0", "stages": {name: {"cmd": "x", "params": {"params.yaml": own(name)}} for name in stages}}


def test_plan_says_before_training_which_stages_will_train_and_their_cost(tmp_path: Path) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text((ROOT / "params.yaml").read_text().replace("phi: 1.5", "phi: 4"))
    params = load_params(params_file)
    jobs = clock.budget(params)
    names = list(dict.fromkeys(preflight.lock_stage(job) for job in jobs))
    assert names[:2] == ["search", "train@efficientnet_b0"] and "train_baseline@resnet50" in names
    assert {"train_phi", "scale_b0", "scale@depth-3", "scale_compound@compound-7"} <= set(names)
    lock = tmp_path / "dvc.lock"

    # the committed run's settings: `-S model.phi=4` trains the phi model alone, and says so with its cost
    lock.write_text(yaml.safe_dump(_lock_of(params_file, names, model__phi=1.5)))
    assert preflight.stale_training(lock, params_file, jobs) == {"train_phi": "model.phi 1.5 -> 4"}
    [head, row] = preflight.preflight(params, params_file, lock, seconds_per_b0_image=1e-3)
    assert head.startswith("plan: this run trains 1 stage, about ")
    assert "train_phi" in row and "model.phi 1.5 -> 4" in row

    # a dvc.lock of other search settings: the search re-runs first, and with it everything that reads its result
    lock.write_text(yaml.safe_dump(_lock_of(params_file, names, model__phi=1.5, search__epochs=2)))
    stale = preflight.stale_training(lock, params_file, jobs)
    assert stale["search"] == "search.epochs 2 -> 20" and stale["train_phi"] == "model.phi 1.5 -> 4"
    assert stale["train@efficientnet_b7"] == "the search re-runs" and "scale_compound@compound-5" not in stale
    assert "train_baseline@resnet50" not in stale and "scale@depth-4" not in stale  # they never read the search
    lines = preflight.preflight(params, params_file, lock, seconds_per_b0_image=1e-3)
    assert lines[0].startswith(f"plan: this run trains {len(stale)} stages") and lines[1].split()[0] == "search"

    # a changed code file that a stage lists as a dep (dvc.lock keeps its md5): that stage trains again
    import hashlib

    code = tmp_path / "stages" / "train_phi.py"
    code.parent.mkdir()
    code.write_text("print('phi')\n")
    recorded = _lock_of(params_file, names)
    recorded["stages"]["train_phi"]["deps"] = [
        {"path": "stages/train_phi.py", "md5": hashlib.md5(code.read_bytes()).hexdigest()},
        {"path": "data/cifar100", "md5": "0" * 32 + ".dir"},
    ]
    lock.write_text(yaml.safe_dump(recorded))
    assert preflight.stale_training(lock, params_file, jobs) == {}
    code.write_text("print('phi, edited')\n")
    assert preflight.stale_training(lock, params_file, jobs) == {"train_phi": "stages/train_phi.py changed"}

    lock.write_text(yaml.safe_dump(_lock_of(params_file, names)))  # nothing changed
    plan = preflight.preflight(params, params_file, lock, 1e-3)
    assert plan[0].startswith("plan: by dvc.lock every training stage is up")
    assert len(preflight.stale_training(tmp_path / "absent.lock", params_file, jobs)) == len(names)  # a fresh project
