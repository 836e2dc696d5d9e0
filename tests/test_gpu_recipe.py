"""The GPU recipe (scripts/gpu.py): windows of dvc.yaml's stages, skipping finished jobs by fingerprint, one archive
per call (the carry and the archive themselves: tests/test_transfer.py).

Nothing here trains: the stage runner is replaced by a recorder where a job would start.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from effnet import transfer

ROOT = Path(__file__).resolve().parents[1]


def _load_recipe():
    spec = importlib.util.spec_from_file_location("gpu_recipe", ROOT / "scripts" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu = _load_recipe()


def test_the_window_must_name_its_coefficients_and_published_never_reads_the_cpu_search(tmp_path):
    (tmp_path / "w.yaml").write_text("models: [efficientnet_b1]\n")
    with pytest.raises(gpu.RecipeError, match="say which coefficients"):
        gpu.load_window(tmp_path / "w.yaml")
    scaling, path, said = gpu.coefficients_for({"coefficients": "published"}, ROOT)
    assert (scaling, path) == ("published", None) and "not metrics/search.json" in said
    with pytest.raises(gpu.RecipeError, match="use `coefficients: published`"):
        gpu.coefficients_for({"coefficients": "gpu/search.json"}, tmp_path)


def _fake_repo(tmp_path: Path) -> tuple[Path, Path]:
    """A repository root (params, dvc.yaml, study.yaml and the code the stages run), a prepared-data marker, and a
    carried archive in the store."""
    root = tmp_path / "repo"
    (root / "data" / "cifar100").mkdir(parents=True)
    (root / "data" / "cifar100" / "meta.json").write_text("{}")
    for name in ("params.yaml", "dvc.yaml", "study.yaml"):
        shutil.copyfile(ROOT / name, root / name)
    for folder in ("effnet", "stages"):  # their code is in each job's fingerprint
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    archive = tmp_path / transfer.MIRROR_NAME
    archive.write_bytes(os.urandom(10_000))
    folders = transfer.split(archive, tmp_path / "carry", part_bytes=6_000, expected_md5=transfer.file_md5(archive))
    store = tmp_path / "store"
    for folder in folders:
        transfer.stash(folder, store)
    return root, store


def _value(command: tuple[str, ...], flag: str) -> str:
    return command[command.index(flag) + 1]


def _recorder(ran: list[tuple[str, ...]], rc: dict[str, int] | None = None):
    """A stage runner that writes what each stage would (weights, curves, metrics) and records its command; `rc`
    maps a `--model`/`--strategy` value to the exit status to give instead."""

    def fake_stage(command, *, cwd, env, log, hard_end):
        ran.append(tuple(command))
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("ran\n")
        assert float(env["EFFNET_DEADLINE"]) < hard_end  # the trainer stops itself before the hard kill
        for flag in ("--model", "--strategy"):
            if flag in command and (rc or {}).get(_value(command, flag)) is not None:
                return rc[_value(command, flag)]
        if "stages/train.py" in command:
            model = _value(command, "--model")
            (cwd / "dvclive" / model).mkdir(parents=True, exist_ok=True)
            (cwd / "dvclive" / model / "metrics.json").write_text('{"step": 2}')
            (cwd / "models" / model).mkdir(parents=True, exist_ok=True)
            (cwd / "models" / model / "model.pt").write_bytes(b"weights")
        if "stages/train_scaling.py" in command:
            name = Path(_value(command, "--live")).name if "--live" in command else "baseline"
            (cwd / "dvclive" / "scaling" / name).mkdir(parents=True, exist_ok=True)
            (cwd / "dvclive" / "scaling" / name / "metrics.json").write_text("{}")
        if "stages.evaluate" in command:
            model = _value(command, "--model")
            for path in (cwd / "metrics" / "models" / f"{model}.json", cwd / "predictions" / f"{model}.npz"):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("{}")
        if "stages.collect" in command:
            (cwd / "metrics" / "models.csv").write_text("model,test_top1\nefficientnet_b0,0.5\n")
        return 0

    return fake_stage


def _trained(ran: list[tuple[str, ...]]) -> list[str]:
    return [_value(c, "--model") for c in ran if "stages/train.py" in c]


def _window(path: Path, **content) -> Path:
    path.write_text(yaml.safe_dump({"name": "w1", "coefficients": "published", **content}))
    return path


def test_finished_models_are_skipped_and_every_call_packs_one_archive(tmp_path, monkeypatch):
    root, store = _fake_repo(tmp_path)
    window = _window(tmp_path / "window.yaml", models=["efficientnet_b0", "resnet50"], params={"train.epochs": 3})
    ran = []
    monkeypatch.setattr(gpu, "run_stage", _recorder(ran))
    monkeypatch.setattr(gpu, "hardware", lambda root: "a test machine\n")
    out = tmp_path / "out"
    assert gpu.run_window(window, root=root, out=out, store=store, limit_s=300, only=[]) == 0
    # dvc.yaml's stages (the data's, then the two models'), their commands as dvc.yaml has them, the window's params
    assert ran[0] == ("python3", "-m", "stages.download", "--params", "params-data.yaml")
    assert ran[1] == ("python3", "stages/train.py", "--model", "efficientnet_b0", "--params", "params-gpu.yaml")
    assert _trained(ran) == ["efficientnet_b0", "resnet50"]
    # each trained model through its own evaluate stage, then the table
    assert [_value(c, "--model") for c in ran if "stages.evaluate" in c] == ["efficientnet_b0", "resnet50"]
    assert ran[-1] == ("python3", "-m", "stages.collect", "--params", "params-gpu.yaml")
    assert sorted(p.name for p in (root / "gpu" / "done").iterdir()) == [
        "train@efficientnet_b0.json",
        "train_baseline@resnet50.json",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["results.md5", "results.tar"]

    # the next call with the same settings and code retrains nothing
    ran.clear()
    out2 = tmp_path / "out2"
    assert gpu.run_window(window, root=root, out=out2, store=store, limit_s=300, only=[]) == 0
    assert ran == []
    assert not [p for p in gpu.unpack([out2], tmp_path / "here2") if p.startswith("dvclive")]  # nothing ran
    # other settings for the same model: it is trained again
    _window(window, models=["resnet50"], params={"train.epochs": 4})
    assert gpu.run_window(window, root=root, out=tmp_path / "out3", store=store, limit_s=300, only=[]) == 0
    assert _trained(ran) == ["resnet50"]

    # the archive unpacks into the repository layout
    here = tmp_path / "here"
    written = gpu.unpack([out], here)
    calls = sorted((here / "gpu" / "w1").iterdir())
    assert len(calls) == 1  # one folder per call
    status = json.loads((calls[0] / "status.json").read_text())
    assert status["jobs"]["train@efficientnet_b0"]["status"] == "done"
    assert "published" in status["coefficients"]
    assert {
        "dvclive/resnet50",
        "metrics/models/resnet50.json",
        "predictions/efficientnet_b0.npz",
        "metrics/models.csv",
        "gpu/done",
    } <= set(written)
    assert (here / "dvclive" / "resnet50" / "metrics.json").is_file()
    assert (here / "gpu" / "done" / "train@efficientnet_b0.json").is_file()
    assert "stages/train.py" in (calls[0] / "commands.txt").read_text()


def test_an_edit_of_the_code_a_job_runs_makes_it_not_done(tmp_path, monkeypatch, capsys):
    """Done means the same settings and the same code (the stage script's import closure, as in `effnet.fingerprint`):
    an edit of effnet/train.py retrains both models; an edit of a file they do not import retrains neither."""
    root, store = _fake_repo(tmp_path)
    window = _window(tmp_path / "window.yaml", models=["efficientnet_b0", "resnet50"], evaluate=False)
    ran = []
    monkeypatch.setattr(gpu, "run_stage", _recorder(ran))
    monkeypatch.setattr(gpu, "hardware", lambda root: "a test machine\n")
    run = dict(root=root, store=store, limit_s=300, only=[])
    assert gpu.run_window(window, out=tmp_path / "o1", **run) == 0 and _trained(ran) == ["efficientnet_b0", "resnet50"]
    record = json.loads((root / "gpu" / "done" / "train@efficientnet_b0.json").read_text())
    assert len(record["fingerprint"]) == 16 and record["settings"]["spec"]["name"] == "efficientnet_b0"

    ran.clear()
    with open(root / "effnet" / "plots.py", "a") as f:  # not imported by stages/train.py
        f.write("# an edit\n")
    assert gpu.run_window(window, out=tmp_path / "o2", **run) == 0 and ran == []

    with open(root / "effnet" / "train.py", "a") as f:
        f.write("# an edit\n")
    capsys.readouterr()
    assert gpu.run_window(window, out=tmp_path / "o3", **run) == 0 and _trained(ran) == ["efficientnet_b0", "resnet50"]
    assert "train@efficientnet_b0: finished earlier with other code" in capsys.readouterr().out
    assert (
        json.loads((root / "gpu" / "done" / "train@efficientnet_b0.json").read_text())["settings"] == record["settings"]
    )  # same settings, other code


def test_a_stage_out_of_time_makes_the_call_say_resume_and_still_pack(tmp_path, monkeypatch):
    root, store = _fake_repo(tmp_path)
    window = _window(tmp_path / "window.yaml", models=["efficientnet_b0"])
    monkeypatch.setattr(gpu, "run_stage", lambda command, **kw: 75 if "stages/train.py" in command else 0)
    monkeypatch.setattr(gpu, "hardware", lambda root: "a test machine\n")
    out = tmp_path / "out"
    assert gpu.run_window(window, root=root, out=out, store=store, limit_s=300, only=[]) == 75
    assert not (root / "gpu" / "done").exists()
    here = tmp_path / "here"
    gpu.unpack([out], here)
    status = json.loads(next((here / "gpu" / "w1").glob("*/status.json")).read_text())
    assert status["jobs"]["train@efficientnet_b0"]["status"].startswith("resume") and status["exit"] == 75


def test_only_stages_that_finished_send_their_outputs_home_not_the_trees_earlier_files(tmp_path, monkeypatch):
    """Found by the --lease dry run: B0's evaluation cut at the hard limit sent home the tree's committed
    metrics/models/efficientnet_b0.json of an earlier CPU run as this call's result, and a training cut mid-run its
    mix of old and new curves. Now a cut training, a cut evaluation and the collect after it send nothing."""
    root, store = _fake_repo(tmp_path)
    earlier = {
        "dvclive/resnet50/metrics.json": '{"run": "earlier"}',
        "metrics/models/efficientnet_b0.json": '{"run": "earlier"}',
        "metrics/models.csv": "model\nearlier\n",
    }
    for rel, text in earlier.items():  # what the tree sent to the machine holds: the committed files of a CPU run
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    window = _window(tmp_path / "window.yaml", models=["efficientnet_b0", "resnet50"])
    ran = []
    record = _recorder(ran, rc={"resnet50": 75})

    def runner(command, **kw):  # B0 trains; its evaluation is killed at the hard limit
        return -9 if "stages.evaluate" in command else record(command, **kw)

    monkeypatch.setattr(gpu, "run_stage", runner)
    monkeypatch.setattr(gpu, "hardware", lambda root: "a test machine\n")
    out = tmp_path / "out"
    assert gpu.run_window(window, root=root, out=out, store=store, limit_s=300, only=[]) == 75
    here = tmp_path / "here"
    written = gpu.unpack([out], here)
    status = json.loads(next((here / "gpu" / "w1").glob("*/status.json")).read_text())
    assert status["outputs"] == ["dvclive/efficientnet_b0"]  # the one stage that finished
    assert "dvclive/efficientnet_b0" in written and not (here / "dvclive" / "resnet50").exists()
    assert not (here / "metrics" / "models").exists()  # not the earlier run's B0 metrics
    assert status["jobs"]["evaluate"]["status"].startswith("resume: cut at the hard time limit")
    assert not [c for c in ran if "stages.collect" in c]  # not started after a cut evaluation


def test_an_evaluation_cut_at_the_hard_limit_says_resume_and_one_that_fails_says_failed(tmp_path, monkeypatch):
    """A cut evaluation (-9) is resumable: the same call again evaluates the models whose weights are newer than
    their records, so the call's exit is 75 as for a cut training; an evaluation that fails on its own is 1."""
    window = _window(tmp_path / "window.yaml", models=["efficientnet_b0"])
    monkeypatch.setattr(gpu, "hardware", lambda root: "a test machine\n")
    for rc, exit_status, said in ((-9, 75, "resume: cut"), (1, 1, "failed: see its log")):
        root, store = _fake_repo(tmp_path / str(rc))
        ran = []
        record = _recorder(ran)
        monkeypatch.setattr(
            gpu,
            "run_stage",
            lambda command, rc=rc, record=record, **kw: rc if "stages.evaluate" in command else record(command, **kw),
        )
        out = tmp_path / str(rc) / "out"
        assert gpu.run_window(window, root=root, out=out, store=store, limit_s=300, only=[]) == exit_status
        here = tmp_path / str(rc) / "here"
        gpu.unpack([out], here)
        status = json.loads(next((here / "gpu" / "w1").glob("*/status.json")).read_text())
        assert status["jobs"]["evaluate"]["status"].startswith(said) and status["exit"] == exit_status
        assert gpu.needs_evaluation(root, "efficientnet_b0")  # the weights still await their record


def test_a_window_naming_an_unknown_stage_fails_in_one_line_that_names_it(tmp_path, monkeypatch, capsys):
    root, store = _fake_repo(tmp_path)
    window = _window(
        tmp_path / "window.yaml", stages=["search", "scale@depth-4"], params={"scaling.flops_targets": [3]}
    )
    ran = []
    monkeypatch.setattr(gpu, "run_stage", _recorder(ran))
    monkeypatch.setattr(gpu, "hardware", lambda root: "a test machine\n")
    assert gpu.run_window(window, root=root, out=tmp_path / "out", store=store, limit_s=300, only=[]) == 1
    assert all("stages.download" in command for command in ran)  # the data is prepared; nothing of the window ran
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: window w1: no stage 'scale@depth-4' in dvc.yaml; did you mean scale@depth-3"
    )
    with pytest.raises(gpu.RecipeError, match="model 'efficientnet_b9': not a model of the matrix"):
        gpu.jobs_for({"name": "w", "models": ["efficientnet_b9"]}, gpu.dvc_stages(ROOT, _params()), "p.yaml", None)
    with pytest.raises(gpu.RecipeError, match="stage entry .*commands come from dvc.yaml"):
        gpu.load_window(_window(tmp_path / "old.yaml", stages=[{"name": "search", "command": "python3 x.py"}]))


def _params(**overrides) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in overrides.items():
        section, leaf = key.split(".")
        params[section][leaf] = value
    return params


def test_a_chunked_archive_unpacks_into_the_repository_layout(tmp_path):
    staging = tmp_path / "staging"
    (staging / "logs").mkdir(parents=True)
    (staging / "dvclive" / "efficientnet_b0").mkdir(parents=True)
    (staging / "dvclive" / "efficientnet_b0" / "metrics.json").write_text("{}")
    (staging / "status.json").write_text(
        json.dumps({"window": "w9", "started": "2026-11-24T07:00:00Z", "outputs": ["dvclive/efficientnet_b0"]})
    )
    (staging / "logs" / "big.log").write_bytes(os.urandom(10_000))  # incompressible: several chunks
    weight = tmp_path / "efficientnet_b0.ema-bf16.pt"
    weight.write_bytes(os.urandom(3_000))
    transfer.pack(staging, tmp_path / "out", extras=[(weight, f"weights/{weight.name}")], chunk_bytes=4_000)
    here = tmp_path / "here"
    written = gpu.unpack([tmp_path / "out"], here)
    assert "dvclive/efficientnet_b0" in written and (here / "dvclive" / "efficientnet_b0" / "metrics.json").is_file()
    assert (
        next((here / "gpu" / "w9").glob("*/logs/big.log")).read_bytes() == (staging / "logs" / "big.log").read_bytes()
    )
    assert (here / "models" / "efficientnet_b0" / "ema-bf16.pt").read_bytes() == weight.read_bytes()

    (tmp_path / "out" / "results.tar.01").unlink()  # a chunk lost on the way: refused, nothing written
    with pytest.raises(transfer.TransferError, match="a chunk is missing or damaged"):
        gpu.unpack([tmp_path / "out"], tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_the_stage_runner_kills_a_stage_at_the_hard_limit_and_leaves_nothing_running(tmp_path):
    import time

    pid_file = tmp_path / "child.pid"
    script = (
        f"import os, time, subprocess, sys; "
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    start = time.time()
    rc = gpu.run_stage(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=dict(os.environ),
        log=tmp_path / "log",
        hard_end=time.time() + 2,
    )
    assert rc == -9 and time.time() - start < 20
    grandchild = int(pid_file.read_text())
    time.sleep(0.2)
    status = Path(f"/proc/{grandchild}/status")  # the whole process group went (a zombie awaiting its reaper is gone)
    assert not status.exists() or "State:\tZ" in status.read_text()
    assert "hard time limit" in (tmp_path / "log").read_text()


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


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "scripts").glob("gpu_window*.yaml")) + [ROOT / "scripts" / "gpu_dryrun.yaml"],
    ids=lambda p: p.name,
)
def test_every_window_file_loads_names_its_coefficients_and_real_stages_and_params(path, tmp_path):
    window = gpu.load_window(path)
    assert window["coefficients"] == "published"  # until a GPU search is committed
    gpu.write_params(window, ROOT, tmp_path / "data.tar.gz", "published", tmp_path / "params.yaml")  # keys exist
    stages = gpu.dvc_stages(ROOT, yaml.safe_load((tmp_path / "params.yaml").read_text()))
    jobs = gpu.jobs_for(window, stages, "params.yaml", None)  # every model and stage is dvc.yaml's
    assert jobs and all(job.command[0] == "python3" and job.command[-2:] == ("--params", "params.yaml") for job in jobs)
    assert set(window.get("estimates") or {}) <= set(window.get("models") or [])


def test_a_window_trains_the_scaling_study_of_the_study_file(tmp_path):
    """`- study: scaling` (window 2): B0, every strategy of study.yaml at every target (smaller targets first), then
    their evaluations, as dvc.yaml's matrices name and run them; none waits for the search."""
    from effnet import study

    window = gpu.load_window(ROOT / "scripts" / "gpu_window2.yaml")
    stages = gpu.dvc_stages(ROOT, _params(**{"scaling.flops_targets": [3, 4]}))
    jobs = {job.name: job for job in gpu.jobs_for(window, stages, "p.yaml", None)}
    trained = [
        f"{'scale_compound' if s.coefficients else 'scale'}@{s.name}-{t}" for t in (3, 4) for s in study.STRATEGIES
    ]
    assert [n for n in jobs if n.startswith("scale")] == ["scale_b0"] + trained
    assert [n for n in jobs if n.startswith("evaluate")] == ["evaluate@scaling/baseline"] + [
        f"evaluate_scale@{s.name}-{t}" for t in (3, 4) for s in study.STRATEGIES
    ]
    assert list(jobs)[0] == "search" and list(jobs)[-1] == "collect"
    assert jobs["scale@width-3"].command == (
        "python3",
        "stages/train_scaling.py",
        "--strategy",
        "width",
        "--target",
        "3",
        "--out",
        "models/scaling/width_3x",
        "--live",
        "dvclive/scaling/width_3x",
        "--params",
        "p.yaml",
    )
    assert jobs["evaluate_scale@width-3"].command == (
        "python3",
        "-m",
        "stages.evaluate",
        "--model",
        "scaling/width_3x",
        "--params",
        "p.yaml",
    )
    waits = {name: gpu.waiting_for(job, list(jobs.values()), stages, tmp_path) for name, job in jobs.items()}
    assert waits["scale_compound@compound-4"] == [] and waits["evaluate_scale@width-3"] == ["scale@width-3"]
    assert "search" not in waits["scale_compound@compound-4"] and "evaluate@scaling/baseline" in waits["collect"]
    with pytest.raises(gpu.RecipeError, match="no study 'matrix'"):
        gpu.jobs_for({"stages": [{"study": "matrix"}]}, stages, "p.yaml", None)


def test_a_strategy_added_to_the_study_file_is_a_stage_of_the_window(tmp_path):
    """The commands come from dvc.yaml with study.yaml's matrices: a strategy added there runs, nothing else edited."""
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copyfile(ROOT / name, tmp_path / name)
    study_file = yaml.safe_load((ROOT / "study.yaml").read_text())
    for section in ("one_dimension", "strategies"):  # as the file's merge key makes it
        study_file[section]["stretch"] = {"title": "stretched", "colour": "tab:brown", "marker": "v"}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study_file))
    stages = gpu.dvc_stages(tmp_path, _params(**{"scaling.flops_targets": [3]}))
    names = [job.name for job in gpu.jobs_for({"stages": [{"study": "scaling"}]}, stages, "p.yaml", None)]
    assert "scale@stretch-3" in names and "evaluate_scale@stretch-3" in names
    assert "--strategy stretch --target 3" in " ".join(stages["scale@stretch-3"].command)


def test_a_stage_waits_for_the_window_stage_that_writes_what_it_reads(tmp_path, monkeypatch):
    """A scaling model that must resume: its evaluation and the table wait (exit 75), the others go on; the next call
    evaluates it and then runs collect, whose inputs changed."""
    root, store = _fake_repo(tmp_path)
    window = _window(
        tmp_path / "window.yaml",
        stages=["scale@depth-3", "scale@width-3", "evaluate_scale", {"name": "collect"}],
        params={"scaling.flops_targets": [3]},
        evaluate=False,
    )
    ran = []
    monkeypatch.setattr(gpu, "run_stage", _recorder(ran, rc={"depth": 75}))
    monkeypatch.setattr(gpu, "hardware", lambda root: "a test machine\n")
    out = tmp_path / "out"
    assert gpu.run_window(window, root=root, out=out, store=store, limit_s=300, only=[]) == 75
    gpu.unpack([out], tmp_path / "here")
    status = json.loads(next((tmp_path / "here" / "gpu" / "w1").glob("*/status.json")).read_text())
    assert status["jobs"]["evaluate_scale@depth-3"]["status"] == "not started: needs scale@depth-3 first"
    assert status["jobs"]["evaluate_scale@width-3"]["status"] == "done"
    assert status["jobs"]["collect"]["status"].startswith("not started: needs evaluate_scale@depth-3")
    assert "dvclive/scaling/width_3x" in status["outputs"]

    ran.clear()
    monkeypatch.setattr(gpu, "run_stage", _recorder(ran))
    assert gpu.run_window(window, root=root, out=tmp_path / "out2", store=store, limit_s=300, only=[]) == 0
    assert len(ran) == 3 and ran[0][:4] == ("python3", "stages/train_scaling.py", "--strategy", "depth")
    assert ran[1][:5] == ("python3", "-m", "stages.evaluate", "--model", "scaling/depth_3x")
    assert ran[2][:3] == ("python3", "-m", "stages.collect")


def test_a_lease_runs_on_prepared_data_and_a_run_resumed_from_bf16_says_so(tmp_path, monkeypatch):
    """`run_window(prepared=True)` (the lease job: data/cifar100 written by scripts/carry.py prepare) joins nothing and
    runs no download stage; a checkpoint that came home in bf16 (pack-lease's record beside it) is named in the
    resumed run's status and done record."""
    root, _ = _fake_repo(tmp_path)
    window = _window(tmp_path / "window.yaml", models=["efficientnet_b0"], params={"train.epochs": 3})
    (root / "checkpoints" / "efficientnet_b0").mkdir(parents=True)
    (root / "checkpoints" / "efficientnet_b0" / "last.pt").write_bytes(b"bf16")
    (root / "checkpoints" / "efficientnet_b0" / gpu.BF16_RECORD).write_text('{"dtype": "bfloat16"}')
    ran = []
    monkeypatch.setattr(gpu, "run_stage", _recorder(ran))
    monkeypatch.setattr(gpu, "hardware", lambda root: "a test machine\n")
    out = tmp_path / "out"
    assert (
        gpu.run_window(window, root=root, out=out, store=tmp_path / "no-store", limit_s=300, only=[], prepared=True)
        == 0
    )
    assert not [c for c in ran if "stages.download" in c] and _trained(ran) == ["efficientnet_b0"]
    record = json.loads((root / "gpu" / "done" / "train@efficientnet_b0.json").read_text())
    assert record["resumed_from_bf16"] == {"dtype": "bfloat16"}
    gpu.unpack([out], tmp_path / "here")
    status = json.loads(next((tmp_path / "here" / "gpu" / "w1").glob("*/status.json")).read_text())
    assert status["jobs"]["train@efficientnet_b0"]["resumed_from_bf16"] == {"dtype": "bfloat16"}

    (root / "data" / "cifar100" / "meta.json").unlink()
    assert (
        gpu.run_window(
            window, root=root, out=tmp_path / "out2", store=tmp_path / "no-store", limit_s=300, only=[], prepared=True
        )
        == 1
    )
