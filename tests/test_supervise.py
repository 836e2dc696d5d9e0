"""effnet/supervise.py, the training stages' supervisor, under faults: kills, Ctrl-C, a second trainer, bad params.

Each test starts a real training stage the way dvc.yaml does (`python -m effnet.supervise
stages/train_phi.py`), on the synthetic data with a few-second budget; EFFNET_NPROC=2 takes
the several-GPU path (torch's elastic launcher, Gloo on the CPU), whose workers run in
sessions of their own (those variants, and the `dvc repro` kill test, are marked slow).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from effnet import supervise
from effnet.io import pid_alive

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = [sys.executable, "-m", "effnet.supervise"]
CHECKPOINTS = Path("checkpoints/efficientnet_phi")


def write_params(path: Path, **overrides: object) -> None:
    """params.yaml with a tiny phi-model run: B0 at 8x8, 200 images, batch 50 (4 steps an epoch)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    values = {
        "network.base_resolution": 8,
        "network.efficientnet_scaling": "published",
        "model.phi": 0.0,
        "train.epochs": 6,
        "train.train_per_class": 2,
        "train.batch_size": 50,
        "train.warmup_epochs": 0.0,
        "train.precision": "fp32",
        "train.eval_batch_size": 200,
        "train.seeds": 1,
        **overrides,
    }
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture()
def project(tmp_path, prepared_data_dir, monkeypatch):
    write_params(tmp_path / "params.yaml")
    (tmp_path / "data").symlink_to(prepared_data_dir)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def start(args: list[str], cwd: Path, nproc: int = 1, **kwargs) -> subprocess.Popen:
    """A command in a process group (and session) of its own, as a shell job or a scheduler's job is.

    SIGINT is reset to its default: a suite started in the background of a non-interactive shell inherits it
    ignored, and Python then never raises KeyboardInterrupt (a terminal's Ctrl-C is never ignored)."""
    env = {**os.environ, "EFFNET_NPROC": str(nproc), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


def wait_until(condition, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def trainers(cwd: Path) -> list[int]:
    """Pids of the live processes running a stage script in `cwd` (supervisor and trainers)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and b"train_phi.py" in (proc / "cmdline").read_bytes()
                and (proc / "cwd").resolve() == cwd.resolve()
                and pid_alive(int(proc.name))
            ):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def phi_stage(cwd: Path, nproc: int = 1, *extra: str) -> subprocess.Popen:
    return start([*LAUNCH, str(ROOT / "stages/train_phi.py"), "--data", "data", *extra], cwd, nproc)


def mid_training(cwd: Path) -> bool:
    """Epoch 1's checkpoint is written: the run is now inside a later epoch."""
    return (cwd / CHECKPOINTS / "last.pt").is_file()


@pytest.mark.parametrize("nproc", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_bad_param_is_one_line_and_exit_1(project, nproc):
    write_params(project / "params.yaml", **{"model.phi": 50})
    process = phi_stage(project, nproc)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert err.strip().splitlines() == ["error: params.yaml: 'model.phi' must be in [0, 12], got 50.0"]


@pytest.mark.parametrize("nproc", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_ctrl_c_is_one_line_naming_where_to_resume(project, nproc):
    write_params(project / "params.yaml", **{"train.epochs": 60})  # far more epochs than reach SIGINT's arrival
    process = phi_stage(project, nproc)
    wait_until(lambda: mid_training(project), what="the first checkpoint")
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: SIGINT to the foreground group
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert err.strip().splitlines() == [f"interrupted; rerun to resume from {CHECKPOINTS}"]
    assert (project / CHECKPOINTS / "last.pt").is_file()


@pytest.mark.parametrize("nproc", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_sigkilled_trainer_is_reported_with_model_batch_and_memory(project, nproc):
    # The OOM killer's SIGKILL cannot be caught by its victim: the supervisor says what happened.
    process = phi_stage(project, nproc)
    wait_until(lambda: mid_training(project), what="the first checkpoint")
    trainer = int((project / CHECKPOINTS / ".lock").read_text())
    assert trainer != process.pid  # the lock holder is the stage script (rank 0), the supervisor's child
    os.kill(trainer, signal.SIGKILL)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert len(err.strip().splitlines()) == 1, err
    [line] = err.strip().splitlines()
    assert line.startswith("error: efficientnet_phi0 at train.batch_size 50 was killed by SIGKILL after holding up to ")
    held_gib = float(line.split("holding up to ")[1].split(" GiB")[0])
    assert 0.05 < held_gib < 8  # a tiny B0 in a Python process with torch: some hundreds of MB
    assert "out-of-memory killer" in line and "dvc exp run -S train.batch_size=25" in line


def test_the_killed_line_says_what_the_stage_said_it_ran_else_its_command(tmp_path):
    note = tmp_path / "killed.json"
    assert supervise.killed_message("stages/x.py", ["--a", "1"], 0, note) == (
        "error: stages/x.py --a 1 was killed by SIGKILL; most likely the out-of-memory killer."
    )
    note.write_text('{"what": "b0 at train.batch_size 8", "hint": "Try 4."}')
    assert supervise.killed_message("stages/x.py", [], 3 * 2**29, note) == (
        "error: b0 at train.batch_size 8 was killed by SIGKILL after holding up to 1.50 GiB of memory; "
        "most likely the out-of-memory killer. Try 4."
    )


def test_a_second_trainer_on_the_same_checkpoints_is_refused(project):
    first = phi_stage(project)
    wait_until(lambda: mid_training(project), what="the first checkpoint")
    holder = int((project / CHECKPOINTS / ".lock").read_text())
    second = phi_stage(project)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 1
    assert err.strip().splitlines() == [
        f"error: {CHECKPOINTS} is in use by another trainer (pid {holder}); wait for it to finish or stop it "
        f"(kill {holder}), then rerun"
    ]
    assert first.poll() is None  # the first trainer goes on undisturbed
    first.communicate(timeout=120)
    assert first.returncode == 0


def fake_dvc(directory: Path, body: str) -> Path:
    """An executable named `dvc` in `directory` running the bash `body` (its command line names dvc, as the real
    one's)."""
    directory.mkdir(parents=True, exist_ok=True)
    dvc = directory / "dvc"
    dvc.write_text(f"#!/bin/bash\n{body}\n")
    dvc.chmod(0o755)
    return dvc


def test_a_plain_sigterm_to_dvc_leaves_no_trainer(project):
    dvc = fake_dvc(project / "bin", '"$@"')  # runs the stage as `dvc repro` does: a child that is not exec'd
    process = start([str(dvc), *LAUNCH, str(ROOT / "stages/train_phi.py"), "--data", "data"], project)
    wait_until(lambda: mid_training(project), what="the first checkpoint")
    pids = trainers(project)
    assert pids, "no trainer found"
    process.send_signal(signal.SIGTERM)  # dvc alone, not its process group
    process.communicate(timeout=30)
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=15, what="the launcher and trainer to die")
    assert not (project / "models/efficientnet_phi/model.pt").exists()
    assert supervise.dvc_ancestor() is None  # pytest itself runs under no dvc


@pytest.mark.parametrize("writes_resume_line, status", [(True, 75), (False, 255)])
def test_exp_sh_exits_75_when_a_trainer_stopped_at_its_budget(tmp_path, writes_resume_line, status):
    body = (
        '[ -n "$EFFNET_RESUME_FILE" ] && printf "checkpoints/efficientnet_b0/last.pt\\t1/3\\n" >> "$EFFNET_RESUME_FILE"'
        if writes_resume_line
        else "true"
    )
    fake_dvc(tmp_path / "bin", f"{body}\nexit 255")  # DVC's status for any failed stage
    (tmp_path / "archive.tar.gz").write_bytes(b"")
    (tmp_path / "overrides.yaml").write_text("train.epochs: 3\n")
    path = f"{tmp_path / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "CIFAR100_ARCHIVE": str(tmp_path / "archive.tar.gz"), "CIFAR100_MD5": "0" * 32}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/exp.sh"), str(tmp_path / "overrides.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == status, done.stderr
    if writes_resume_line:
        assert "run the same command again to resume:\n  checkpoints/efficientnet_b0/last.pt\t1/3" in done.stderr


def test_gpu_count_respects_cuda_visible_devices(monkeypatch, tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\nfor i in 0 1 2 3; do echo "GPU $i: NVIDIA H100 (UUID: GPU-$i)"; done\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path), prepend=os.pathsep)
    monkeypatch.delenv("EFFNET_NPROC", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert supervise.gpu_count() == 4
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert supervise.gpu_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert supervise.gpu_count() == 0


# kill -9 of `dvc repro`'s process group, as the OOM killer or a scheduler's hard stop does it


def dvc_project(root: Path, data: Path) -> Path:
    """A DVC repository with this project's code and only its `train_phi` stage, exactly as dvc.yaml has it."""
    import shutil

    root.mkdir()
    for package in ("effnet", "stages"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "study.yaml", root / "study.yaml")  # dvc.yaml's `vars:` and a dep of the stage
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    (root / "dvc.yaml").write_text(
        yaml.safe_dump({"vars": pipeline["vars"], "stages": {"train_phi": pipeline["stages"]["train_phi"]}})
    )
    write_params(root / "params.yaml")
    shutil.copytree(data, root / "data/cifar100")
    (root / "metrics").mkdir()
    (root / "metrics/search.json").write_text('{"alpha": 1.2, "beta": 1.1, "gamma": 1.15}\n')  # a dep; not read
    (root / "plan").mkdir()
    (root / "plan/train.json").write_text("{}\n")  # the plan stage's output, a dep of every training stage; not read
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=root, check=True)
    return root


BIN = Path(sys.executable).parent  # dvc and python of this environment
TIMING = {"epoch_time_s.tsv", "images_per_s.tsv"}  # wall-clock measurements: differ from run to run


def dvc_repro(root: Path, nproc: int) -> subprocess.Popen:
    env_path = f"{BIN}{os.pathsep}{os.environ['PATH']}"  # the stage's `python` is this environment's
    return subprocess.Popen(
        [str(BIN / "dvc"), "repro", "train_phi"],
        cwd=root,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PATH": env_path, "EFFNET_NPROC": str(nproc), "OMP_NUM_THREADS": "1"},
    )


def curves(root: Path) -> dict[str, list[list[str]]]:
    live = root / "dvclive/efficientnet_phi/plots/metrics"
    return {
        p.relative_to(live).as_posix(): [line.split("\t") for line in p.read_text().splitlines()[1:]]
        for p in sorted(live.rglob("*.tsv"))
    }


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_kill_9_of_dvc_repro_leaves_no_trainer_and_the_rerun_matches(tmp_path, prepared_data_dir, nproc):
    killed = dvc_project(tmp_path / "killed", prepared_data_dir)
    clean = dvc_project(tmp_path / "clean", prepared_data_dir)

    repro = dvc_repro(killed, nproc)
    wait_until(lambda: mid_training(killed), what="the first checkpoint")
    pids = trainers(killed)
    assert len(pids) >= 1 + nproc  # the supervisor and its trainers (and a shell, where it does not exec)
    if nproc > 1:  # the elastic launcher starts its workers in sessions of their own, out of reach of killpg
        assert any(os.getsid(pid) != repro.pid for pid in pids)
    os.killpg(repro.pid, signal.SIGKILL)
    repro.communicate()
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=15, what="every trainer to die")
    assert not (killed / "models/efficientnet_phi/model.pt").exists()  # an orphan would go on to write it

    rerun = dvc_repro(killed, nproc)
    log = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, log
    assert "resuming after epoch" in log  # the checkpoint of the killed run was used
    uninterrupted = dvc_repro(clean, nproc)
    assert uninterrupted.communicate(timeout=300)[0] and uninterrupted.returncode == 0

    resumed, reference = curves(killed), curves(clean)
    assert resumed.keys() == reference.keys() and "val/top1.tsv" in resumed
    for name, rows in resumed.items():
        assert [int(row[0]) for row in rows] == list(range(6)), name  # every step once, in order
        if Path(name).name not in TIMING:
            assert rows == reference[name], name
    weights = [torch.load(root / "models/efficientnet_phi/model.pt", weights_only=True) for root in (killed, clean)]
    assert weights[0]["state_dict"].keys() == weights[1]["state_dict"].keys()
    assert all(torch.equal(weights[0]["state_dict"][k], weights[1]["state_dict"][k]) for k in weights[0]["state_dict"])
