#!/usr/bin/env python3
"""The GPU recipe: carry the data to the bare GPU machine, train a window's models there inside each call's
time limit, and bring every result home in one archive per call. README, "On the GPU machine", has the plan.

    here:    python scripts/gpu.py prepare [--archive PATH] [--margin-mib 8]
    device:  python3 scripts/gpu.py stash .carry/partN            (one call per part, back to back)
    device:  python3 scripts/gpu.py data                          (join the parts, prepare the arrays)
    device:  python3 scripts/gpu.py run scripts/gpu_window1.yaml [--limit-s 540] [--only JOB ...]
    here:    python scripts/gpu.py unpack DIR | FILE...           (then commit what it lists)

The device side needs only Python 3.12, torch and torchvision (and numpy, pyyaml, tqdm: all in the
image): no dvc, dvclive, fvcore or torchrun. DVC does not run there; the stage scripts run as plain
`python3 stages/<stage>.py` (one GPU, one process), and the results come home as the same files the
DVC stages write (metrics/, dvclive/, predictions/), which are committed here; `commands.txt` in
each archive says exactly what ran.

`run` never lets a stage outlive the call: every stage gets EFFNET_DEADLINE (the trainer stops after
the last epoch that fits, writes its checkpoint and exits 75, "resume me"), runs in its own process
group, and is killed at a hard limit that leaves time to pack. Whatever happened, the archive is
written: `$OUT/results.tar` (or `results.tar.00`, `.01`, ... when over 15 MiB) and
`$OUT/results.md5`. A job whose results exist for the same settings is skipped (`done/`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CIFAR_NAME = "cifar-100-python.tar.gz"
CIFAR_MD5 = "489088aff4823e5bdf2d51ec904dbfdb"
CARRY_LIMIT_MIB = 64  # the device tool's limit on what one call carries, the tree included
CHUNK_BYTES = 15 * 2**20  # under the 16 MiB per returned file
ARCHIVE_CAP_BYTES = 56 * 2**20  # under the 64 MiB returned per call, with room for the md5 file
RESUME_EXIT_STATUS = 75  # effnet.train.RESUME_EXIT_STATUS (not imported: `prepare` and `unpack` need no torch)
PUBLISHED = {"alpha": 1.2, "beta": 1.1, "gamma": 1.15}  # Tan & Le (2019), Section 3.3


class RecipeError(RuntimeError):
    """The recipe cannot go on; the message says why and what to do."""


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# here: the carry parts
# --------------------------------------------------------------------------------------


def tree_bytes(root: Path = ROOT) -> int:
    """Bytes of what every device call sends: tracked files plus untracked files that git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True).stdout.split(b"\0")
    return sum((root / n.decode()).stat().st_size for n in names if n and (root / n.decode()).is_file())


def prepare(archive: Path, carry_dir: Path, *, part_bytes: int, expected_md5: str = CIFAR_MD5) -> list[Path]:
    """Split `archive` into `carry_dir/partN/` folders of at most `part_bytes`, each with a MANIFEST.json.

    The manifest names the whole file, its md5 and every part's md5, so that the device can
    check each part as it arrives and the joined file before using it.
    """
    if not archive.is_file():
        raise RecipeError(f"{archive}: no such file; pass --archive with the CIFAR-100 mirror")
    whole_md5 = md5sum(archive)
    if whole_md5 != expected_md5:
        raise RecipeError(f"{archive}: md5 {whole_md5}, expected {expected_md5}")
    shutil.rmtree(carry_dir, ignore_errors=True)
    parts, index = [], 0
    with open(archive, "rb") as f:
        while block := f.read(part_bytes):
            index += 1
            folder = carry_dir / f"part{index}"
            folder.mkdir(parents=True)
            (folder / f"{archive.name}.{index:02d}").write_bytes(block)
            parts.append({"file": f"{archive.name}.{index:02d}", "bytes": len(block),
                          "md5": hashlib.md5(block).hexdigest()})
    manifest = {"name": archive.name, "bytes": archive.stat().st_size, "md5": whole_md5, "parts": parts}
    folders = sorted(carry_dir.glob("part*"), key=lambda p: int(p.name[4:]))
    for folder in folders:
        (folder / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return folders


def stash(part_dir: Path, store: Path) -> list[str]:
    """Copy a carried part (verified against its manifest) into `store`, which outlives the repository copy."""
    manifest = json.loads((part_dir / "MANIFEST.json").read_text())
    store.mkdir(parents=True, exist_ok=True)
    copied = []
    for part in manifest["parts"]:
        source = part_dir / part["file"]
        if not source.is_file():
            continue
        if md5sum(source) != part["md5"]:
            raise RecipeError(f"{source}: md5 differs from the manifest; prepare and carry it again")
        tmp = store / f".{part['file']}.tmp"
        shutil.copyfile(source, tmp)
        os.replace(tmp, store / part["file"])
        copied.append(part["file"])
    shutil.copyfile(part_dir / "MANIFEST.json", store / "MANIFEST.json")
    return copied


def join(store: Path, target: Path) -> Path:
    """Join the parts in `store` into `target`, atomically: a temporary file, its md5 checked, then renamed.

    A missing or wrong part raises RecipeError naming it, and leaves no `target` behind, so a
    later call with every part present joins afresh. An existing `target` with the right md5 is kept.
    """
    manifest_path = store / "MANIFEST.json"
    if not manifest_path.is_file():
        raise RecipeError(f"{manifest_path}: no manifest; carry the parts first (scripts/gpu.py stash)")
    manifest = json.loads(manifest_path.read_text())
    if target.is_file() and md5sum(target) == manifest["md5"]:
        return target
    missing = [p["file"] for p in manifest["parts"] if not (store / p["file"]).is_file()]
    if missing:
        raise RecipeError(f"{store}: parts missing: {', '.join(missing)}; "
                          "carry them (scripts/gpu.py stash) and run again")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.joining-{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            for part in manifest["parts"]:
                with open(store / part["file"], "rb") as f:
                    shutil.copyfileobj(f, out)
        got = md5sum(tmp)
        if got != manifest["md5"]:
            raise RecipeError(f"joined {manifest['name']} has md5 {got}, expected {manifest['md5']}; "
                              "a part is corrupt: carry the parts again")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# --------------------------------------------------------------------------------------
# device: the window's jobs
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Job:
    name: str  # e.g. "train:efficientnet_b0", "search"
    command: list[str]
    model: str | None = None  # a train-matrix model: done when its settings match
    outputs: tuple[str, ...] = ()  # for other jobs: done when these exist with the same params and command
    # jobs that must be done first (e.g. the scaling study's compound models need the search)
    needs: tuple[str, ...] = ()


def load_window(path: Path) -> dict[str, Any]:
    """A window file: name, coefficients, bench, models, stages, params (dotted overrides), reserves."""
    import yaml

    window = yaml.safe_load(Path(path).read_text()) or {}
    known = {"name", "coefficients", "bench", "models", "stages", "params", "evaluate", "reserve_s", "estimates"}
    unknown = set(window) - known
    if unknown:
        raise RecipeError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    if "coefficients" not in window:
        raise RecipeError(f"{path}: say which coefficients B1-B7 use: `coefficients: published`, or the path of a "
                          "GPU search's JSON (never the committed CPU search by default)")
    window.setdefault("name", Path(path).stem)
    return window


def coefficients_for(window: dict[str, Any], root: Path) -> tuple[str, Path | None, str]:
    """('published' | 'searched', the coefficients file or None, a line that says which and why)."""
    choice = window["coefficients"]
    if choice == "published":
        return "published", None, (f"coefficients: published (alpha {PUBLISHED['alpha']}, beta {PUBLISHED['beta']}, "
                                   f"gamma {PUBLISHED['gamma']}; B1-B7 by the paper's table), not metrics/search.json")
    path = root / str(choice)
    if not path.is_file():
        raise RecipeError(f"coefficients file {choice} not found; "
                          "use `coefficients: published` until a GPU search exists")
    record = json.loads(path.read_text())
    return "searched", path, (f"coefficients: searched, from {choice} (alpha {record['alpha']}, beta {record['beta']}, "
                              f"gamma {record['gamma']})")


def write_params(window: dict[str, Any], root: Path, archive: Path, scaling: str, target: Path) -> None:
    """params.yaml with the window's overrides, the carried archive and the chosen scaling."""
    import yaml

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"].update(url=str(archive), md5=CIFAR_MD5)
    params["network"]["efficientnet_scaling"] = scaling
    for key, value in (window.get("params") or {}).items():
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            if part not in node:
                raise RecipeError(f"params override {key}: no section {part!r} in params.yaml")
            node = node[part]
        if leaf not in node:
            raise RecipeError(f"params override {key}: no key {leaf!r} in params.yaml")
        node[leaf] = value
    target.write_text(yaml.safe_dump(params, sort_keys=False))


def scaling_study_stages(targets: list[float]) -> list[dict[str, Any]]:
    """`- study: scaling` in a window's stages: B0 (scale_b0), every strategy of study.yaml at every FLOPs target (the
    the compound rule at the paper's coefficients), then the evaluation of each."""
    from effnet import study

    params = "--params {params}"
    train = [{"name": "scale_b0", "command": f"python3 stages/train_scaling.py --strategy baseline {params}"}]
    evaluate = [{"name": "evaluate_scaling_baseline",
                 "command": f"python3 stages/evaluate.py --model {study.SCALING_BASELINE_MODEL} {params}"}]
    for target in targets:
        for strategy in study.STRATEGIES:
            name = study.scaled_name(strategy.name, target)
            train.append({"name": f"scale_{name}",
                          "command": f"python3 stages/train_scaling.py --strategy {strategy.name} --target {target:g} "
                                     f"--out models/scaling/{name} --live dvclive/scaling/{name} {params}"})
            evaluate.append({"name": f"evaluate_scaling_{name}",
                             "command": f"python3 stages/evaluate.py --model scaling/{name} {params}"})
    return train + evaluate


def jobs_for(window: dict[str, Any], params_file: str, coefficients: Path | None,
             targets: list[float] | None = None) -> list[Job]:
    """The window's jobs: its models, then its stages, `- study: scaling` expanded at `targets` (scaling.flops_targets
    of the window's params)."""
    jobs = []
    for model in window.get("models") or []:
        command = ["python3", "stages/train.py", "--model", model, "--params", params_file]
        if coefficients is not None:
            command += ["--coefficients", str(coefficients)]
        jobs.append(Job(f"train:{model}", command, model=model))
    for entry in window.get("stages") or []:
        if "study" in entry:
            if entry["study"] != "scaling" or targets is None:
                raise RecipeError(f"window stage {entry}: `study: scaling` is the one study a window expands, "
                                  "at the window's scaling.flops_targets")
        for stage in scaling_study_stages(targets) if "study" in entry else [entry]:
            command = [part.replace("{params}", params_file) for part in stage["command"].split()]
            jobs.append(Job(stage["name"], command, outputs=tuple(stage.get("outputs", ())),
                            needs=tuple(stage.get("needs", ()))))
    return jobs


def job_settings(job: Job, root: Path, params_file: Path, coefficients: Path | None) -> dict[str, Any]:
    """What decides the job's result: for a model its spec and recipe; else the command and the params file."""
    if job.model is None:
        return {"command": job.command, "params_sha256": hashlib.sha256(params_file.read_bytes()).hexdigest()}
    from effnet.checkpoint import settings
    from effnet.config import load_params
    from effnet.experiment import model_spec

    params = load_params(params_file)
    return json.loads(json.dumps(settings(model_spec(job.model, params, coefficients), params.train), default=str))


def is_done(job: Job, root: Path, done_dir: Path, wanted: dict[str, Any]) -> bool:
    """A done record (written on success, committed with the results) with the same settings; outputs still here."""
    record_path = done_dir / f"{job.name.replace(':', '_')}.json"
    if not record_path.is_file():
        return False
    return (json.loads(record_path.read_text()).get("settings") == wanted
            and all((root / o).exists() for o in job.outputs))


def needs_evaluation(root: Path, model: str) -> bool:
    """Whether `model` has weights on this machine that its metrics record (if any) predates."""
    weights, record = root / "models" / model / "model.pt", root / "metrics" / "models" / f"{model}.json"
    return weights.is_file() and (not record.is_file() or record.stat().st_mtime < weights.stat().st_mtime)


def run_stage(command: list[str], *, cwd: Path, env: dict[str, str], log: Path, hard_end: float) -> int:
    """Run `command` in its own process group, its output to the console and `log`; kill the group at `hard_end`.

    Returns the exit status, or -9 when it had to be killed. Never leaves a process behind.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        sink.write(f"$ {' '.join(command)}\n".encode())
        sink.flush()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        os.set_blocking(process.stdout.fileno(), False)
        try:
            while True:
                chunk = process.stdout.read()
                if chunk:
                    sink.write(chunk)
                    sink.flush()
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                if process.poll() is not None:
                    rest = process.stdout.read() or b""
                    sink.write(rest)
                    sys.stdout.buffer.write(rest)
                    return process.returncode
                if time.time() > hard_end:
                    sink.write(b"\n[gpu.py] hard time limit: killing the stage\n")
                    print("[gpu.py] hard time limit: killing the stage", flush=True)
                    kill_group(process)
                    return -9
                time.sleep(0.2)
        finally:
            if process.poll() is None:
                kill_group(process)


def kill_group(process: subprocess.Popen) -> None:
    """SIGTERM to the stage's process group, SIGKILL after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def bf16_weights(model_pt: Path, target: Path) -> None:
    """The EMA weights (raw ones without an EMA) of a weights file, floats in bf16, with the spec and metrics."""
    import torch

    payload = torch.load(model_pt, map_location="cpu", weights_only=True)
    state = payload["ema_state_dict"] if payload.get("ema_state_dict") is not None else payload["state_dict"]
    small = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"spec": payload["spec"], "state_dict_bf16": small, "ema": payload.get("ema_state_dict") is not None,
                "metrics": payload["metrics"], "train_config": payload["train_config"]}, target)


def pack(staging: Path, out: Path, *, extras: list[tuple[Path, str]]) -> list[Path]:
    """One tar of `staging` plus as many `extras` (path, name in the archive) as fit ARCHIVE_CAP_BYTES, in
    their order, split in CHUNK_BYTES chunks.

    Writes `out/results.tar` (or `.00`, `.01`, ...) and `out/results.md5` (md5 of the whole
    archive and of each chunk). Extras that do not fit are named in `left_out.txt` inside.
    """
    def build(included: list[tuple[Path, str]]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:  # not gzipped: weights do not compress, logs are small
            tar.add(staging, arcname="results")
            for path, name in included:
                tar.add(path, arcname=f"results/{name}")
        return buffer.getvalue()

    size = len(build([]))
    included: list[tuple[Path, str]] = []
    left = []
    for extra in extras:
        grows = 1024 + -(-extra[0].stat().st_size // 512) * 512  # headers (long names too) and padding
        if size + grows <= ARCHIVE_CAP_BYTES - 4096:
            included.append(extra)
            size += grows
        else:
            left.append(extra[1])
    if left:
        (staging / "left_out.txt").write_text("over the per-call limit, left on the machine:\n"
                                              + "\n".join(left) + "\n")
    blob = build(included)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    if len(blob) <= CHUNK_BYTES:
        files.append(out / "results.tar")
        files[0].write_bytes(blob)
    else:
        for i in range(0, len(blob), CHUNK_BYTES):
            path = out / f"results.tar.{i // CHUNK_BYTES:02d}"
            path.write_bytes(blob[i:i + CHUNK_BYTES])
            files.append(path)
    lines = [f"{hashlib.md5(blob).hexdigest()}  results.tar"]
    lines += [f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.name}" for p in files if p.name != "results.tar"]
    (out / "results.md5").write_text("\n".join(lines) + "\n")
    return files + [out / "results.md5"]


def prepare_data(root: Path, store: Path, env: dict[str, str], log: Path, hard_end: float,
                 window: dict[str, Any] | None = None) -> Path:
    """Join the carried archive (atomically) and prepare the arrays with the download stage under the window's
    `data.*` params; again only when those differ from the last preparation's. Returns the archive."""
    import yaml

    archive = join(store, root / "data" / "raw" / CIFAR_NAME)
    params = root / "params-data.yaml"
    write_params(window or {"coefficients": "published"}, root, archive, "published", params)
    wanted = yaml.safe_load(params.read_text())["data"]
    record = root / "data" / "prepared-with.json"
    if (root / "data" / "cifar100" / "meta.json").is_file() and record.is_file() \
            and json.loads(record.read_text()) == wanted:
        return archive
    command = ["python3", "stages/download.py", "--params", params.name]
    if run_stage(command, cwd=root, env=env, log=log, hard_end=hard_end):
        raise RecipeError(f"the download stage failed; see {log.name}")
    record.write_text(json.dumps(wanted) + "\n")
    return archive


def hardware(root: Path) -> str:
    lines = []
    try:
        lines.append(subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"],
                                    capture_output=True, text=True, timeout=30).stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        lines.append("nvidia-smi: not found")
    probe = ("import platform, torch, torchvision; "
             "print('python', platform.python_version(), 'torch', torch.__version__,"
             " 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available() and "
             "torch.cuda.get_device_name(0)); import os; print('cpus', os.cpu_count())")
    lines.append(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=root).stdout.strip())
    return "\n".join(lines) + "\n"


def run_window(window_path: Path, *, root: Path, out: Path, store: Path, limit_s: float, only: list[str]) -> int:
    """Run a window's jobs within `limit_s` seconds from now, then pack everything into `out`. Returns 0, 75 or 1."""
    start = time.time()
    window = load_window(window_path)
    reserve = window.get("reserve_s", {})
    pack_reserve, eval_reserve = float(reserve.get("pack", 30)), float(reserve.get("evaluate", 60))
    hard_end = start + limit_s - pack_reserve
    staging = Path(tempfile.mkdtemp(prefix="gpu-results-"))
    (staging / "logs").mkdir()
    done_dir = root / "gpu" / "done"
    status: dict[str, Any] = {"window": window["name"], "limit_s": limit_s,
                              "started": time.strftime("%FT%TZ", time.gmtime(start)), "jobs": {}}
    commands = [f"# window {window['name']}: python3 scripts/gpu.py run {window_path} --limit-s {limit_s:g}"]
    exit_status = 0
    interrupted = []

    def on_signal(signum, frame):  # a SIGTERM from outside: stop the stage, still pack (later signals are ignored)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        interrupted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # the trainer stops itself (exit 75) by this deadline; the hard kill of a stage comes 20 s later
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "EFFNET_DEADLINE": f"{hard_end - eval_reserve - 20:.0f}"}
    try:
        scaling, coefficients, said = coefficients_for(window, root)
        print(said, flush=True)
        status["coefficients"] = said
        archive = prepare_data(root, store, env, staging / "logs" / "download.log", hard_end, window)
        params_file = root / "params-gpu.yaml"
        write_params(window, root, archive, scaling, params_file)
        shutil.copyfile(params_file, staging / "params-gpu.yaml")
        (staging / "hardware.txt").write_text(hardware(root))
        if window.get("bench"):
            for name, command in (("bench_loader", ["python3", "benchmarks/bench_loader.py", "--device", "cuda",
                                                    "--archive", str(archive)]),
                                  ("bench_train", ["python3", "benchmarks/bench_train.py", "--peak-tflops", "989"])):
                if only and name not in only:
                    continue
                if (done_dir / f"{name}.json").is_file():
                    print(f"{name}: done in an earlier call, skipped", flush=True)
                    continue
                commands.append(" ".join(command))
                rc = run_stage(command, cwd=root, env=env, log=staging / "logs" / f"{name}.log",
                               hard_end=hard_end - eval_reserve)
                status["jobs"][name] = {"status": "done" if rc == 0 else f"failed ({rc})"}
                if rc == 0:
                    done_dir.mkdir(parents=True, exist_ok=True)
                    (done_dir / f"{name}.json").write_text(json.dumps({"job": name, "command": command}) + "\n")

        trained, window_jobs = [], []
        import yaml

        targets = yaml.safe_load(params_file.read_text())["scaling"]["flops_targets"]
        for job in jobs_for(window, "params-gpu.yaml", coefficients, targets):
            window_jobs.append(job)
            if only and job.name not in only and (job.model or "") not in only:
                continue
            wanted = job_settings(job, root, params_file, coefficients)
            if is_done(job, root, done_dir, wanted):
                print(f"{job.name}: finished earlier with the same settings, skipped", flush=True)
                status["jobs"][job.name] = {"status": "done earlier"}
                continue
            waiting = [n for n in job.needs if not (done_dir / f"{n.replace(':', '_')}.json").is_file()]
            if waiting:
                status["jobs"][job.name] = {"status": f"not started: needs {', '.join(waiting)} first"}
                exit_status = exit_status or RESUME_EXIT_STATUS
                continue
            if time.time() > hard_end - eval_reserve:
                status["jobs"][job.name] = {"status": "not started (out of time)"}
                exit_status = RESUME_EXIT_STATUS
                continue
            commands.append(" ".join(job.command))
            began = time.time()
            rc = run_stage(job.command, cwd=root, env=env, log=staging / "logs" / f"{job.name.replace(':', '_')}.log",
                           hard_end=hard_end - eval_reserve)
            entry = {"exit": rc, "seconds": round(time.time() - began, 1)}
            if rc == 0:
                entry["status"] = "done"
                done_dir.mkdir(parents=True, exist_ok=True)
                (done_dir / f"{job.name.replace(':', '_')}.json").write_text(json.dumps(
                    {"job": job.name, "command": job.command, "settings": wanted,
                     "finished": time.strftime("%FT%TZ", time.gmtime())}, indent=2) + "\n")
                trained.append(job)
            elif rc in (RESUME_EXIT_STATUS, -9):
                entry["status"] = "resume: run the same call again"
                exit_status = RESUME_EXIT_STATUS
            else:
                entry["status"] = "failed: see its log"
                exit_status = exit_status or 1
            status["jobs"][job.name] = entry

        # each model's own evaluate stage (its metrics JSON and per-image predictions), then the table: every model
        # of the window whose weights are newer than its record (trained in this call, or in a call that was lost
        # after its training finished), then collect
        unevaluated = [job.model for job in window_jobs if job.model and needs_evaluation(root, job.model)]
        if unevaluated and window.get("evaluate", True):
            evaluations = [["python3", "stages/evaluate.py", "--model", model, "--params", "params-gpu.yaml"]
                           for model in unevaluated]
            failed = 0
            for command in evaluations + [["python3", "stages/collect.py", "--params", "params-gpu.yaml"]]:
                commands.append(" ".join(command))
                failed = failed or run_stage(command, cwd=root, env=env, log=staging / "logs" / "evaluate.log",
                                             hard_end=hard_end)
            status["jobs"]["evaluate"] = {"exit": failed, "status": "done" if failed == 0 else "failed: see its log"}
            if failed:
                exit_status = exit_status or 1
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        status["error"] = str(error)
        exit_status = 1
    except KeyboardInterrupt:
        status["error"] = f"interrupted by signal {interrupted or 'SIGINT'}; packed what there was"
        exit_status = RESUME_EXIT_STATUS
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # packing is short and must finish
        status["seconds"] = round(time.time() - start, 1)
        status["exit"] = exit_status
        files = collect_and_pack(window, root, staging, out, status, commands)
        print(f"packed {', '.join(p.name for p in files)} in {out} "
              f"({sum(p.stat().st_size for p in files) / 2**20:.1f} MiB)"
              f" after {time.time() - start:.0f} s; exit {exit_status}", flush=True)
        shutil.rmtree(staging, ignore_errors=True)
    return exit_status


def collect_and_pack(window: dict[str, Any], root: Path, staging: Path, out: Path, status: dict[str, Any],
                     commands: list[str]) -> list[Path]:
    """Copy the results of this machine into `staging` and pack them (see `pack`)."""
    (staging / "status.json").write_text(json.dumps(status, indent=2) + "\n")
    (staging / "commands.txt").write_text("\n".join(commands) + "\n")
    ran = {name for name, job in status["jobs"].items() if "exit" in job}  # started in this call
    # only what this call's jobs wrote: the repository copy also holds the committed files of earlier runs
    outputs = ["gpu/done"]
    if any(name.startswith("evaluate") or name == "collect" for name in ran):
        outputs += ["metrics/models", "metrics/models.csv", "predictions"]
    if "search" in ran:
        outputs += ["metrics/search.json", "plots/search.csv"]
    for rel in outputs:
        source = root / rel
        if source.is_dir():
            shutil.copytree(source, staging / rel, dirs_exist_ok=True)
        elif source.is_file():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staging / rel)
    models = [m for m in window.get("models") or []]
    for model in models:
        if f"train:{model}" in ran and (root / "dvclive" / model).is_dir():
            shutil.copytree(root / "dvclive" / model, staging / "dvclive" / model, dirs_exist_ok=True)
    if any(name.startswith("scale") for name in ran) and (root / "dvclive" / "scaling").is_dir():
        shutil.copytree(root / "dvclive" / "scaling", staging / "dvclive" / "scaling", dirs_exist_ok=True)
    extras: list[tuple[Path, str]] = []
    weights_dir = Path(tempfile.mkdtemp(prefix="gpu-weights-"))
    try:
        for model in models:  # unfinished runs first (a lost machine then costs only the unfinished epoch), small first
            checkpoint = root / "checkpoints" / model / "last.pt"
            if checkpoint.is_file() and not (root / "models" / model / "model.pt").is_file():
                extras.append((checkpoint, f"checkpoints/{model}/last.pt"))
        weights = []
        for model in models:  # trained in this call: an earlier call's archive brought the others home
            model_pt = root / "models" / model / "model.pt"
            if model_pt.is_file() and status["jobs"].get(f"train:{model}", {}).get("status") == "done":
                try:
                    target = weights_dir / f"{model}.ema-bf16.pt"
                    bf16_weights(model_pt, target)
                    weights.append((target, f"weights/{target.name}"))
                except Exception as error:  # the archive must still be written
                    (staging / "logs" / f"weights_{model}.txt").write_text(f"bf16 copy failed: {error}\n")
        extras = sorted(extras, key=lambda e: e[0].stat().st_size) + sorted(weights, key=lambda e: e[0].stat().st_size)
        return pack(staging, out, extras=extras)
    finally:
        shutil.rmtree(weights_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------
# here: unpack a call's archive into the repository
# --------------------------------------------------------------------------------------


def merge_table(new: Path, table: Path) -> list[str]:
    """Put the rows of `new` into `table` (csv, keyed by its `model` column), replacing the same models'; returns the
    models whose rows came from `table` alone (an earlier run's)."""
    import csv

    with open(new, newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = list(reader.fieldnames or []), {r["model"]: r for r in reader}
    kept = []
    if table.is_file():
        with open(table, newline="") as f:
            old = list(csv.DictReader(f))
        for row in old:
            if row.get("model") not in rows:
                kept.append(row["model"])
        rows = {**{r["model"]: r for r in old if r["model"] in kept}, **rows}
    table.parent.mkdir(parents=True, exist_ok=True)
    tmp = table.with_name(f".{table.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows.values())
    os.replace(tmp, table)
    return kept


def unpack(sources: list[Path], root: Path) -> list[str]:
    """Join and check a call's archive, then copy its results into `root`; returns the paths to commit.

    metrics/models/*.json, predictions/, dvclive/<model>/, metrics/search.json and
    plots/search.csv go where the DVC stages write them; the rest (status, commands,
    hardware, logs, benchmark output, the call's models.csv) under gpu/<window>/<call's start>/;
    weights to models/<model>/ema-bf16.pt (ignored by git: too large).
    """
    files = sorted(p for s in sources for p in (sorted(s.iterdir()) if s.is_dir() else [s]))
    md5_file = next((p for p in files if p.name == "results.md5"), None)
    chunks = [p for p in files if p.name.startswith("results.tar")]
    if md5_file is None or not chunks:
        raise RecipeError(f"no results.md5 and results.tar[.NN] among {[str(s) for s in sources]}")
    expected = md5_file.read_text().split()[0]
    blob = b"".join(p.read_bytes() for p in chunks)
    if hashlib.md5(blob).hexdigest() != expected:
        raise RecipeError(f"the archive's md5 differs from results.md5 ({len(chunks)} chunk(s)): a chunk is missing "
                          "or damaged; fetch the call's files again")
    written = []
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        tar.extractall(tmp, filter="data")
        results = Path(tmp) / "results"
        status = json.loads((results / "status.json").read_text())
        # one folder per call, so that every call's status and logs are kept
        window_dir = Path("gpu") / status["window"] / status["started"].replace("-", "").replace(":", "")
        for rel in ("metrics/models", "predictions", "dvclive", "metrics/search.json", "plots/search.csv", "gpu/done"):
            source = results / rel
            if not source.exists():
                continue
            target = root / rel
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
            written.append(rel)
        (root / window_dir).mkdir(parents=True, exist_ok=True)
        for name in ("status.json", "commands.txt", "hardware.txt", "params-gpu.yaml", "left_out.txt", "logs",
                     "metrics/models.csv"):
            source = results / name
            if source.is_dir():
                shutil.copytree(source, root / window_dir / name, dirs_exist_ok=True)
            elif source.is_file():
                shutil.copyfile(source, root / window_dir / Path(name).name)
            else:
                continue
            written.append(str(window_dir / Path(name).name))
        if (results / "metrics" / "models.csv").is_file():
            kept = merge_table(results / "metrics" / "models.csv", root / "metrics" / "models.csv")
            written.append("metrics/models.csv")
            if kept:
                print(f"metrics/models.csv: rows of an earlier run kept beside this call's: {', '.join(kept)} "
                      "(say which run each row is from before publishing a table)", file=sys.stderr)
        for checkpoint in (sorted((results / "checkpoints").glob("*/last.pt"))
                           if (results / "checkpoints").is_dir() else []):
            target = root / "checkpoints" / checkpoint.parent.name / "last.pt"  # carry it to resume on a fresh machine
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(checkpoint, target)
        for w in sorted((results / "weights").glob("*.ema-bf16.pt")) if (results / "weights").is_dir() else []:
            target = root / "models" / w.name.removesuffix(".ema-bf16.pt") / "ema-bf16.pt"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(w, target)
    return written


# --------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="here: split the data into carry parts that fit with the tree")
    p.add_argument("--archive", type=Path, default=Path(os.environ.get("CIFAR100_ARCHIVE",
                                                                       ROOT.parent / "shared/data" / CIFAR_NAME)))
    p.add_argument("--carry", type=Path, default=ROOT / ".carry")
    p.add_argument("--margin-mib", type=float, default=6.0, help="room under the carry limit left for the tree to grow")
    p = sub.add_parser("stash", help="device: keep a carried part outside the repository copy")
    p.add_argument("part", type=Path)
    p.add_argument("--store", type=Path, default=Path(os.environ.get("EFFNET_CARRY_STORE", "/root/carry")))
    p = sub.add_parser("data", help="device: join the carried parts and prepare the arrays (download stage)")
    p.add_argument("window", type=Path, nargs="?", help="the window whose data.* params to use (default params.yaml's)")
    p.add_argument("--store", type=Path, default=Path(os.environ.get("EFFNET_CARRY_STORE", "/root/carry")))
    p = sub.add_parser("run", help="device: run a window's jobs, then pack the results into $OUT")
    p.add_argument("window", type=Path)
    p.add_argument("--limit-s", type=float, default=540.0, help="seconds for the whole call (under timeout_s)")
    p.add_argument("--only", nargs="*", default=[], help="jobs or models of the window to run")
    p.add_argument("--store", type=Path, default=Path(os.environ.get("EFFNET_CARRY_STORE", "/root/carry")))
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu-out")))
    p = sub.add_parser("unpack", help="here: check and unpack a call's archive into the repository")
    p.add_argument("sources", type=Path, nargs="+", help="the call's files (or their folder)")
    p.add_argument("--repo", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            tree = tree_bytes()
            largest = int((CARRY_LIMIT_MIB - args.margin_mib) * 2**20) - tree
            if not args.archive.is_file():
                raise RecipeError(f"{args.archive}: no such file; pass --archive with the CIFAR-100 mirror")
            size = args.archive.stat().st_size
            count = -(-size // largest)
            part_bytes = -(-size // count)  # as few parts as fit, of equal size: the most room left in each call
            if subprocess.run(["git", "check-ignore", "-q", str(args.carry / "part1")], cwd=ROOT).returncode != 0:
                raise RecipeError(f"{args.carry} is not ignored by git: it would travel with every call; "
                                  "keep it under the repository's ignored /.carry/")
            folders = prepare(args.archive, args.carry, part_bytes=part_bytes)
            print(f"tree {tree / 2**20:.2f} MiB (git ls-files plus untracked, unignored files); "
                  f"{len(folders)} parts of "
                  f"at most {part_bytes / 2**20:.2f} MiB; each call carries at most "
                  f"{(tree + part_bytes) / 2**20:.2f} MiB of the {CARRY_LIMIT_MIB} MiB allowed:")
            for folder in folders:
                size = sum(f.stat().st_size for f in folder.iterdir())
                print(f"  {folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder}: "
                      f"{size / 2**20:.2f} MiB, "
                      f"with the tree {(size + tree) / 2**20:.2f} MiB")
        elif args.command == "stash":
            copied = stash(args.part, args.store)
            print(f"stashed {', '.join(copied) or 'nothing'} in {args.store}")
        elif args.command == "data":
            window = load_window(args.window) if args.window else None
            archive = prepare_data(ROOT, args.store, dict(os.environ), ROOT / "data" / "download.log",
                                   time.time() + 540, window)
            print(f"{archive}: joined, md5 {CIFAR_MD5} checked; arrays in data/cifar100")
        elif args.command == "run":
            # the driver itself must not start before the repository's root is the working directory
            os.chdir(ROOT)
            return run_window(args.window, root=ROOT, out=args.out, store=args.store, limit_s=args.limit_s,
                              only=args.only)
        elif args.command == "unpack":
            for rel in unpack(args.sources, args.repo):
                print(rel)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _with_package() -> None:
    """Re-run this script with the tree's `effnet` importable where the package is not installed.

    The bare GPU machine gets a copy of the tree, not an installed package; PYTHONPATH (not
    `sys.path`) so that the stage scripts this starts import the same `effnet`.
    """
    if importlib.util.find_spec("effnet") is None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


if __name__ == "__main__":
    _with_package()
    sys.exit(main())
