"""The GPU recipe (scripts/gpu.py): carry parts and their atomic join, skipping finished jobs, the one archive per call.

Nothing here trains: the stage runner is replaced by a recorder where a job would start.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load_recipe():
    spec = importlib.util.spec_from_file_location("gpu_recipe", ROOT / "scripts" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu = _load_recipe()


def _archive(path: Path, size: int = 10_000) -> str:
    path.write_bytes(os.urandom(size))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_parts_fit_and_a_partial_join_never_sticks(tmp_path):
    archive = tmp_path / "data.tar.gz"
    md5 = _archive(archive)
    folders = gpu.prepare(archive, tmp_path / "carry", part_bytes=4_000, expected_md5=md5)
    assert [f.name for f in folders] == ["part1", "part2", "part3"]
    assert [sum(p.stat().st_size for p in f.glob("data.tar.gz.*")) for f in folders] == [4_000, 4_000, 2_000]

    store, target = tmp_path / "store", tmp_path / "joined" / "data.tar.gz"
    gpu.stash(folders[0], store)
    gpu.stash(folders[2], store)
    with pytest.raises(gpu.RecipeError, match=r"parts missing: data\.tar\.gz\.02"):
        gpu.join(store, target)
    assert not target.exists() and not list(target.parent.glob("*")) if target.parent.exists() else True

    gpu.stash(folders[1], store)  # the last part arrives: the join now works
    assert gpu.join(store, target) == target
    assert target.read_bytes() == archive.read_bytes()

    # a damaged part: the joined file is not kept, and nothing half-joined is left behind
    target.unlink()
    part = store / "data.tar.gz.02"
    part.write_bytes(b"x" + part.read_bytes()[1:])
    with pytest.raises(gpu.RecipeError, match="a part is corrupt"):
        gpu.join(store, target)
    assert list(target.parent.iterdir()) == []


def test_a_part_that_differs_from_its_manifest_is_refused_on_arrival(tmp_path):
    archive = tmp_path / "data.tar.gz"
    md5 = _archive(archive)
    folders = gpu.prepare(archive, tmp_path / "carry", part_bytes=6_000, expected_md5=md5)
    (folders[0] / "data.tar.gz.01").write_bytes(b"damaged")
    with pytest.raises(gpu.RecipeError, match="md5 differs from the manifest"):
        gpu.stash(folders[0], tmp_path / "store")
    with pytest.raises(gpu.RecipeError, match="md5 .*expected 0{32}"):
        gpu.prepare(archive, tmp_path / "carry2", part_bytes=6_000, expected_md5="0" * 32)


def test_the_window_must_name_its_coefficients_and_published_never_reads_the_cpu_search(tmp_path):
    (tmp_path / "w.yaml").write_text("models: [efficientnet_b1]\n")
    with pytest.raises(gpu.RecipeError, match="say which coefficients"):
        gpu.load_window(tmp_path / "w.yaml")
    scaling, path, said = gpu.coefficients_for({"coefficients": "published"}, ROOT)
    assert (scaling, path) == ("published", None) and "not metrics/search.json" in said
    with pytest.raises(gpu.RecipeError, match="use `coefficients: published`"):
        gpu.coefficients_for({"coefficients": "gpu/search.json"}, tmp_path)


def _fake_repo(tmp_path: Path) -> tuple[Path, Path]:
    """A repository root with params.yaml, prepared-data marker and a carried archive in the store."""
    root = tmp_path / "repo"
    (root / "data" / "cifar100").mkdir(parents=True)
    (root / "data" / "cifar100" / "meta.json").write_text("{}")
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    archive = tmp_path / gpu.CIFAR_NAME
    md5 = _archive(archive)
    folders = gpu.prepare(archive, tmp_path / "carry", part_bytes=6_000, expected_md5=md5)
    store = tmp_path / "store"
    for folder in folders:
        gpu.stash(folder, store)
    return root, store


def test_finished_models_are_skipped_and_every_call_packs_one_archive(tmp_path, monkeypatch):
    root, store = _fake_repo(tmp_path)
    window = tmp_path / "window.yaml"
    window.write_text(yaml.safe_dump({"name": "w1", "coefficients": "published",
                                      "models": ["efficientnet_b0", "resnet50"], "params": {"train.epochs": 3}}))
    ran = []

    def fake_stage(command, *, cwd, env, log, hard_end):
        ran.append(command)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("ran\n")
        assert float(env["EFFNET_DEADLINE"]) < hard_end  # the trainer stops itself before the hard kill
        if "stages/train.py" in command:
            model = command[command.index("--model") + 1]
            live = cwd / "dvclive" / model
            live.mkdir(parents=True, exist_ok=True)
            (live / "metrics.json").write_text('{"step": 2}')
            (cwd / "models" / model).mkdir(parents=True, exist_ok=True)
            (cwd / "models" / model / "model.pt").write_bytes(b"weights")
        if "stages/evaluate.py" in command:
            model = command[command.index("--model") + 1]
            (cwd / "metrics" / "models").mkdir(parents=True, exist_ok=True)
            (cwd / "metrics" / "models" / f"{model}.json").write_text("{}")
        return 0

    monkeypatch.setattr(gpu, "run_stage", fake_stage)
    monkeypatch.setattr(gpu, "hardware", lambda root: "a test machine\n")
    out = tmp_path / "out"
    assert gpu.run_window(window, root=root, out=out, store=store, limit_s=300, only=[]) == 0
    assert [c[c.index("--model") + 1] for c in ran if "stages/train.py" in c] == ["efficientnet_b0", "resnet50"]
    # each trained model through its own evaluate stage, then the table
    assert [c[c.index("--model") + 1] for c in ran if "stages/evaluate.py" in c] == ["efficientnet_b0", "resnet50"]
    assert any("stages/collect.py" in c for c in ran)
    assert sorted(p.name for p in (root / "gpu" / "done").iterdir()) == ["train_efficientnet_b0.json",
                                                                         "train_resnet50.json"]
    assert sorted(p.name for p in out.iterdir()) == ["results.md5", "results.tar"]

    # the next call with the same settings retrains nothing
    ran.clear()
    out2 = tmp_path / "out2"
    assert gpu.run_window(window, root=root, out=out2, store=store, limit_s=300, only=[]) == 0
    assert ran == []
    assert "dvclive" not in gpu.unpack([out2], tmp_path / "here2")  # nothing ran: no curves (the copy's are old)
    # other settings for the same model: it is trained again
    window.write_text(yaml.safe_dump({"name": "w1", "coefficients": "published", "models": ["resnet50"],
                                      "params": {"train.epochs": 4}}))
    assert gpu.run_window(window, root=root, out=tmp_path / "out3", store=store, limit_s=300, only=[]) == 0
    assert [c[c.index("--model") + 1] for c in ran if "stages/train.py" in c] == ["resnet50"]

    # the archive unpacks into the repository layout
    here = tmp_path / "here"
    written = gpu.unpack([out], here)
    calls = sorted((here / "gpu" / "w1").iterdir())
    assert len(calls) == 1  # one folder per call
    status = json.loads((calls[0] / "status.json").read_text())
    assert status["jobs"]["train:efficientnet_b0"]["status"] == "done"
    assert "published" in status["coefficients"]
    assert (here / "dvclive" / "resnet50" / "metrics.json").is_file() and "dvclive" in written
    assert "stages/train.py" in (calls[0] / "commands.txt").read_text()


def test_a_stage_out_of_time_makes_the_call_say_resume_and_still_pack(tmp_path, monkeypatch):
    root, store = _fake_repo(tmp_path)
    window = tmp_path / "window.yaml"
    window.write_text(yaml.safe_dump({"name": "w1", "coefficients": "published", "models": ["efficientnet_b0"]}))
    monkeypatch.setattr(gpu, "run_stage", lambda command, **kw: 75 if "stages/train.py" in command else 0)
    monkeypatch.setattr(gpu, "hardware", lambda root: "a test machine\n")
    out = tmp_path / "out"
    assert gpu.run_window(window, root=root, out=out, store=store, limit_s=300, only=[]) == 75
    assert not (root / "gpu" / "done").exists()
    here = tmp_path / "here"
    gpu.unpack([out], here)
    status = json.loads(next((here / "gpu" / "w1").glob("*/status.json")).read_text())
    assert status["jobs"]["train:efficientnet_b0"]["status"].startswith("resume") and status["exit"] == 75


def test_the_stage_runner_kills_a_stage_at_the_hard_limit_and_leaves_nothing_running(tmp_path):
    import time

    pid_file = tmp_path / "child.pid"
    script = f"import os, time, subprocess, sys; " \
             f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
             f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    start = time.time()
    rc = gpu.run_stage([sys.executable, "-c", script], cwd=tmp_path, env=dict(os.environ), log=tmp_path / "log",
                       hard_end=time.time() + 2)
    assert rc == -9 and time.time() - start < 20
    grandchild = int(pid_file.read_text())
    time.sleep(0.2)
    status = Path(f"/proc/{grandchild}/status")  # the whole process group went (a zombie awaiting its reaper is gone)
    assert not status.exists() or "State:\tZ" in status.read_text()
    assert "hard time limit" in (tmp_path / "log").read_text()


def test_a_large_archive_comes_back_in_chunks_under_the_file_limit_and_unpacks(tmp_path, monkeypatch):
    # the real limits: the cap leaves at most 4 chunks of 15 MiB plus the md5 file, under the 8 files a call returns
    assert -(-gpu.ARCHIVE_CAP_BYTES // gpu.CHUNK_BYTES) + 1 <= 8 and gpu.CHUNK_BYTES < 16 * 2**20
    monkeypatch.setattr(gpu, "CHUNK_BYTES", 4_000)
    staging = tmp_path / "staging"
    (staging / "logs").mkdir(parents=True)
    (staging / "status.json").write_text(json.dumps({"window": "w9", "started": "2026-11-24T07:00:00Z"}))
    (staging / "logs" / "big.log").write_bytes(os.urandom(10_000))  # incompressible
    weight = tmp_path / "efficientnet_b0.ema-bf16.pt"
    weight.write_bytes(os.urandom(3_000))
    files = gpu.pack(staging, tmp_path / "out", extras=[(weight, f"weights/{weight.name}")])
    chunks = [f for f in files if f.name.startswith("results.tar.")]
    total = sum(f.stat().st_size for f in chunks)
    assert len(chunks) == -(-total // 4_000) >= 2 and all(f.stat().st_size <= 4_000 for f in files)
    here = tmp_path / "here"
    gpu.unpack([tmp_path / "out"], here)
    assert next((here / "gpu" / "w9").glob("*/logs/big.log")).read_bytes() == (
        staging / "logs" / "big.log").read_bytes()
    assert (here / "models" / "efficientnet_b0" / "ema-bf16.pt").read_bytes() == weight.read_bytes()

    chunks[1].unlink()  # a chunk lost on the way: refused, nothing written
    with pytest.raises(gpu.RecipeError, match="a chunk is missing or damaged"):
        gpu.unpack([tmp_path / "out"], tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("path",
                         sorted((ROOT / "scripts").glob("gpu_window*.yaml")) + [ROOT / "scripts" / "gpu_dryrun.yaml"],
                         ids=lambda p: p.name)
def test_every_window_file_loads_names_its_coefficients_and_overrides_real_params(path, tmp_path):
    from effnet.study import model_names

    window = gpu.load_window(path)
    assert window["coefficients"] == "published"  # until a GPU search is committed
    assert set(window.get("models") or []) <= set(model_names())
    gpu.write_params(window, ROOT, tmp_path / "data.tar.gz", "published", tmp_path / "params.yaml")  # keys exist
    assert set(window.get("estimates") or {}) <= set(window.get("models") or [])


def test_a_model_trained_in_a_lost_call_is_still_evaluated(tmp_path):
    """A call killed after a model's training finished, before its evaluation: the next call, which skips the
    finished training, must still evaluate it (its weights are newer than its record, or it has none)."""
    import os

    weights = tmp_path / "models" / "resnet50" / "model.pt"
    record = tmp_path / "metrics" / "models" / "resnet50.json"
    assert not gpu.needs_evaluation(tmp_path, "resnet50")  # nothing trained
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    assert gpu.needs_evaluation(tmp_path, "resnet50")  # trained, never evaluated
    record.parent.mkdir(parents=True)
    record.write_text("{}")  # an older record, e.g. the committed run's
    os.utime(record, (weights.stat().st_mtime - 60,) * 2)
    assert gpu.needs_evaluation(tmp_path, "resnet50")
    os.utime(record, (weights.stat().st_mtime + 60,) * 2)
    assert not gpu.needs_evaluation(tmp_path, "resnet50")  # evaluated after its training


def test_a_window_trains_the_scaling_study_of_the_study_file(monkeypatch):
    """`- study: scaling` (window 2): B0, every strategy of study.yaml at every target; none waits for the search."""
    from effnet import study

    window = gpu.load_window(ROOT / "scripts" / "gpu_window2.yaml")
    jobs = {job.name: job for job in gpu.jobs_for(window, "p.yaml", None, [3, 4])}
    strategies = study.strategy_names()
    assert [n for n in jobs if n.startswith("scale_")] == ["scale_b0"] + [f"scale_{s}_{t}x" for t in (3, 4)
                                                                           for s in strategies]
    assert [n for n in jobs if n.startswith("evaluate_")] == ["evaluate_scaling_baseline"] + [
        f"evaluate_scaling_{s}_{t}x" for t in (3, 4) for s in strategies]
    assert not jobs["scale_compound_4x"].needs and "metrics/search.json" not in jobs["scale_compound_4x"].command
    assert " ".join(jobs["scale_width_3x"].command) == ("python3 stages/train_scaling.py --strategy width --target 3 "
                                                        "--out models/scaling/width_3x --live dvclive/scaling/width_3x "
                                                        "--params p.yaml") and not jobs["scale_width_3x"].needs
    stretch = study.Strategy("stretch", "stretched", "tab:brown", "v")
    monkeypatch.setattr(study, "STRATEGIES", study.STRATEGIES + (stretch,))
    names = [job.name for job in gpu.jobs_for(window, "p.yaml", None, [3])]
    assert "scale_stretch_3x" in names and "evaluate_scaling_stretch_3x" in names
    with pytest.raises(gpu.RecipeError, match="study: scaling"):
        gpu.jobs_for({"stages": [{"study": "matrix"}]}, "p.yaml", None, [3])
