#!/usr/bin/env python3
"""The GPU recipe: carry the data to the bare GPU machine, run a window's DVC stages there inside each call's time
limit, and bring every result home in one archive per call. docs/gpu.md has the plan.

    here:    python scripts/gpu.py prepare [--archive PATH] [--margin-mib 6]
    device:  python3 scripts/gpu.py stash .carry/partN            (one call per part, back to back)
    device:  python3 scripts/gpu.py data [WINDOW]                 (join the parts, prepare the arrays)
    device:  python3 scripts/gpu.py run scripts/gpu_window1.yaml [--limit-s 540] [--only JOB ...]
    device:  python3 scripts/gpu.py pack-lease --out $OUT         (a lease's last call: docs/lease.md)
    here:    python scripts/gpu.py unpack DIR | FILE...           (then commit what it lists)

A window file names stages of dvc.yaml (`search`, `scale@depth-3`, `evaluate@scaling/baseline`; a matrix stage's
own name, `scale`, for all its items), the models of the matrix to train, and `study: scaling`; never a command.
Each stage's command, params and outputs are read from dvc.yaml, its `${...}` resolved from study.yaml and the
window's params as DVC resolves them, `${launch}` being the stage script itself (one GPU, one process), so the
device runs what `dvc repro` runs here. The device needs only Python 3.12, torch and torchvision (and numpy,
pyyaml: all in the image): no dvc, dvclive, fvcore or torchrun. The results come home as the files the DVC stages
write (their `cache: false` outputs), which are committed here; `commands.txt` in each archive says what ran.

`run` never lets a stage outlive the call: every stage gets EFFNET_DEADLINE (the trainer stops after
the last epoch that fits, writes its checkpoint and exits 75, "resume me"), runs in its own process
group, and is killed at a hard limit that leaves time to pack. Whatever happened, the archive is
written: `$OUT/results.tar` (or `results.tar.00`, `.01`, ... when over 15 MiB) and `$OUT/results.md5`.
A job is done, and skipped, while its record in `gpu/done/` holds the same fingerprint (`effnet.fingerprint`:
its settings and the code its script imports, so an edit means the same on every machine) and its committed
outputs exist. Carrying and packing are `effnet.transfer`'s; this script is the policy and the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.util
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


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

# after the re-run above, which makes the tree's effnet importable; both need the standard library only
from effnet import transfer  # noqa: E402
from effnet.transfer import MIRROR_ARCHIVE_MD5, MIRROR_NAME, TransferError  # noqa: E402

DEVICE_VARS = {"launch": "python3"}  # dvc.yaml's launcher there: the stage script itself, one GPU, one process
# `study: <name>` in a window: these stages (a matrix stage: all its items), the training ones first, each
# group in the order of its FLOPs targets, so that a call out of time has every strategy at the smaller ones
STUDIES = {"scaling": (("scale_b0", "scale", "scale_compound"), ("evaluate@scaling/baseline", "evaluate_scale"))}
BENCHMARKS = {
    "bench_loader": ("python3", "benchmarks/bench_loader.py", "--device", "cuda"),  # with --archive
    "bench_train": ("python3", "benchmarks/bench_train.py", "--peak-tflops", "989"),
}
WINDOW_KEYS = ("name", "coefficients", "bench", "models", "stages", "params", "evaluate", "reserve_s", "estimates")


class RecipeError(RuntimeError):
    """The recipe cannot go on; the message says why and what to do."""


# --------------------------------------------------------------------------------------
# the stages of dvc.yaml, as the device runs them
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of dvc.yaml for one item of its matrix, resolved as DVC resolves it."""

    name: str  # DVC's: train@efficientnet_b0, scale@depth-3, collect
    command: tuple[str, ...]  # its `cmd`, `${launch}` and `python` being python3
    params: tuple[str, ...] = ()  # the params.yaml keys it reads (`params`), dotted
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()  # what it writes (`outs` and `metrics`)
    committed: tuple[str, ...] = ()  # those with `cache: false`: in git, so on every machine once unpacked here
    item: dict[str, Any] = dataclasses.field(default_factory=dict)  # its matrix entry


_REFERENCE = re.compile(r"\$\{\s*([^}\s]+)\s*\}")


def lookup(context: dict[str, Any], key: str, where: str) -> Any:
    """`context`'s value at the dotted `key`; a missing one is an error that names it."""
    node: Any = context
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise RecipeError(f"{where}: {key} is not defined (params, study.yaml or dvc.yaml `vars`)")
        node = node[part]
    return node


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _resolve(value: Any, context: dict[str, Any], where: str) -> Any:
    """`${...}` in strings, keys included: a whole-string reference keeps its value's type (a matrix's list)."""
    if isinstance(value, str):
        whole = _REFERENCE.fullmatch(value.strip())
        if whole:
            return lookup(context, whole[1], where)
        return _REFERENCE.sub(lambda m: _text(lookup(context, m[1], where)), value)
    if isinstance(value, list):
        return [_resolve(v, context, where) for v in value]
    if isinstance(value, dict):
        return {_resolve(k, context, where): _resolve(v, context, where) for k, v in value.items()}
    return value


def _paths(entries: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """(path, options) of each `outs`/`metrics`/`deps` entry: a path, or {path: options}."""
    return [(e, {}) if isinstance(e, str) else next((str(k), v or {}) for k, v in e.items()) for e in entries]


def dvc_stages(root: Path, params: dict[str, Any]) -> dict[str, Stage]:
    """Every stage of `root/dvc.yaml`, each matrix expanded in DVC's order under DVC's names, resolved with `params`
    (the window's params.yaml), its `vars` (study.yaml) and `DEVICE_VARS`."""
    import yaml

    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    context: dict[str, Any] = dict(params)
    for entry in pipeline.get("vars") or []:
        context.update(yaml.safe_load((root / entry).read_text()) if isinstance(entry, str) else entry)
    context.update(DEVICE_VARS)
    stages = {}
    for group, definition in pipeline["stages"].items():
        if "foreach" in definition:
            raise RecipeError(f"dvc.yaml stage {group}: `foreach` is not read here; write it as a `matrix`")
        items: list[tuple[dict[str, Any], str]] = [({}, group)]
        if "matrix" in definition:
            matrix = {
                key: list(_resolve(values, context, f"dvc.yaml {group}"))  # a mapping: its keys
                for key, values in definition["matrix"].items()
            }
            items = [
                (dict(zip(matrix, values, strict=True)), f"{group}@{'-'.join(_text(v) for v in values)}")
                for values in itertools.product(*matrix.values())
            ]
        for item, name in items:
            local, where = {**context, "item": item}, f"dvc.yaml {name}"
            command = shlex.split(_resolve(definition["cmd"], local, where))
            if command[0] == "python":
                command[0] = "python3"
            keys = []
            for entry in definition.get("params") or []:
                if isinstance(entry, str):
                    keys.append(entry)
                    continue
                for file, names in entry.items():
                    if file != "params.yaml":
                        raise RecipeError(f"{where}: params of {file} are not read here, only params.yaml's")
                    keys.extend(names)
            outs = _paths(_resolve([*(definition.get("outs") or []), *(definition.get("metrics") or [])], local, where))
            stages[name] = Stage(
                name,
                tuple(command),
                tuple(keys),
                tuple(p for p, _ in _paths(_resolve(definition.get("deps") or [], local, where))),
                tuple(p for p, _ in outs),
                tuple(p for p, o in outs if o.get("cache", True) is False),
                item,
            )
    return stages


def select(name: str, stages: dict[str, Stage], where: str) -> list[Stage]:
    """The stage `name`, or every item of the matrix stage `name`; else an error that names it, in one line."""
    if name in stages:
        return [stages[name]]
    items = [s for s in stages.values() if s.name.partition("@")[0] == name and "@" in s.name]
    if items:
        return items
    close = difflib.get_close_matches(name, list(stages), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "`dvc stage list` names them"
    raise RecipeError(f"{where}: no stage {name!r} in dvc.yaml; {hint}")


def writer(path: str, stages: dict[str, Stage]) -> Stage | None:
    """The stage of dvc.yaml whose outputs include `path`."""
    return next((s for s in stages.values() if path in s.outs), None)


def _within(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip("/") + "/")


def upstream(stage: Stage, stages: dict[str, Stage]) -> list[Stage]:
    """The stages that write what `stage` reads (an output inside one of its deps, or a dep inside an output)."""
    return [
        s
        for s in stages.values()
        if s is not stage and any(_within(o, d) or _within(d, o) for o in s.outs for d in stage.deps)
    ]


def script_of(command: tuple[str, ...], root: Path) -> Path:
    """The Python file a command runs: `python3 stages/x.py ...` or `python3 -m stages.x ...`."""
    if "-m" in command:
        return root / (command[command.index("-m") + 1].replace(".", "/") + ".py")
    script = next((part for part in command[1:] if part.endswith(".py")), None)
    if script is None:
        raise RecipeError(f"`{' '.join(command)}` runs no Python file of the tree: no code to fingerprint")
    return root / script


# --------------------------------------------------------------------------------------
# device: the window's jobs
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    """One thing a window runs: a stage of dvc.yaml with the window's params, or a benchmark."""

    name: str  # its stage's (train@efficientnet_b0, search) or a benchmark's (bench_loader)
    command: tuple[str, ...]
    stage: Stage | None = None  # None for a benchmark
    model: str | None = None  # a model of the matrix: its settings are its spec and recipe
    required: bool = True  # a failure fails the call; a benchmark's is only reported


def load_window(path: Path) -> dict[str, Any]:
    """A window file: name, coefficients, bench, models, stages, params (dotted overrides), reserves, estimates."""
    import yaml

    window = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(window) - set(WINDOW_KEYS)
    if unknown:
        raise RecipeError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(WINDOW_KEYS)}")
    if "coefficients" not in window:
        raise RecipeError(
            f"{path}: say which coefficients B1-B7 use: `coefficients: published`, or the path of a "
            "GPU search's JSON (never the committed CPU search by default)"
        )
    for entry in window.get("stages") or []:
        if not isinstance(entry, str) and not (
            isinstance(entry, dict) and len(entry) == 1 and set(entry) <= {"name", "study"}
        ):
            raise RecipeError(
                f"{path}: stage entry {entry!r}: a stage of dvc.yaml (`search`, or `name: search`), "
                "or `study: scaling`; commands come from dvc.yaml"
            )
    window.setdefault("name", Path(path).stem)
    return window


def coefficients_for(window: dict[str, Any], root: Path) -> tuple[str, Path | None, str]:
    """('published' | 'searched', the coefficients file or None, a line that says which and why)."""
    from effnet.config import PAPER_COEFFICIENTS

    choice = window["coefficients"]
    if choice == "published":
        alpha, beta, gamma = PAPER_COEFFICIENTS
        return (
            "published",
            None,
            (
                f"coefficients: published (alpha {alpha}, beta {beta}, gamma {gamma}; "
                "B1-B7 by the paper's table), not metrics/search.json"
            ),
        )
    path = root / str(choice)
    if not path.is_file():
        raise RecipeError(
            f"coefficients file {choice} not found; use `coefficients: published` until a GPU search exists"
        )
    record = json.loads(path.read_text())
    return (
        "searched",
        path,
        (
            f"coefficients: searched, from {choice} (alpha {record['alpha']}, beta {record['beta']}, "
            f"gamma {record['gamma']})"
        ),
    )


def write_params(window: dict[str, Any], root: Path, archive: Path, scaling: str, target: Path) -> None:
    """params.yaml with the window's overrides, the carried archive and the chosen scaling."""
    import yaml

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"].update(url=str(archive), md5=MIRROR_ARCHIVE_MD5)
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


def study_stages(study: str, stages: dict[str, Stage], where: str) -> list[Stage]:
    """`study: <study>` of a window (`STUDIES`): for `scaling`, B0 (scale_b0) and every strategy of study.yaml at
    every scaling.flops_targets, as dvc.yaml's matrices have them, then the evaluation of each."""
    if study not in STUDIES:
        raise RecipeError(f"{where}: no study {study!r}; a window expands {', '.join(map(repr, STUDIES))}")
    return [
        stage
        for phase in STUDIES[study]
        for stage in sorted(
            (s for name in phase for s in select(name, stages, where)), key=lambda s: float(s.item.get("target", 0))
        )
    ]


def jobs_for(
    window: dict[str, Any], stages: dict[str, Stage], params_file: str, coefficients: Path | None
) -> list[Job]:
    """The window's jobs: the training stage of each of its models, then its stages (`study:` expanded)."""
    from effnet.study import model_names

    where = f"window {window.get('name', '?')}"
    jobs = []
    for model in window.get("models") or []:
        stage = writer(f"models/{model}", stages)
        if stage is None or model not in model_names():
            raise RecipeError(
                f"{where}: model {model!r}: not a model of the matrix (no stage of dvc.yaml trains it); "
                f"the matrix: {', '.join(model_names())}"
            )
        command = (*stage.command, "--params", params_file)
        if coefficients is not None:
            command += ("--coefficients", str(coefficients))
        jobs.append(Job(stage.name, command, stage, model=model))
    for entry in window.get("stages") or []:
        if isinstance(entry, dict) and "study" in entry:
            chosen = study_stages(entry["study"], stages, where)
        else:
            chosen = select(entry if isinstance(entry, str) else entry["name"], stages, where)
        jobs += [Job(stage.name, (*stage.command, "--params", params_file), stage) for stage in chosen]
    return jobs


def file_stem(name: str) -> str:
    """A job's name as a file name: evaluate@scaling/baseline -> evaluate@scaling_baseline."""
    return name.replace("/", "_")


def record_path(done_dir: Path, name: str) -> Path:
    return done_dir / f"{file_stem(name)}.json"


def read_record(done_dir: Path, name: str) -> dict[str, Any] | None:
    path = record_path(done_dir, name)
    return json.loads(path.read_text()) if path.is_file() else None


def job_settings(
    job: Job,
    params: dict[str, Any],
    params_file: Path,
    coefficients: Path | None,
    stages: dict[str, Stage],
    done_dir: Path,
) -> dict[str, Any]:
    """What decides the job's result. A model of the matrix: its spec and recipe. Another stage: its command, the
    params dvc.yaml lists for it, and the fingerprints of the stages (done here) that wrote what it reads."""
    if job.model is not None:
        from effnet.checkpoint import settings
        from effnet.config import load_params
        from effnet.experiment import model_spec

        loaded = load_params(params_file)
        return json.loads(json.dumps(settings(model_spec(job.model, loaded, coefficients), loaded.train), default=str))
    if job.stage is None:
        return {"command": list(job.command)}
    inputs = {
        s.name: record["fingerprint"]
        for s in upstream(job.stage, stages)
        if (record := read_record(done_dir, s.name)) and "fingerprint" in record
    }
    return {
        "command": list(job.command),
        "params": {k: lookup(params, k, f"{job.name}: params") for k in job.stage.params},
        "inputs": inputs,
    }


def job_fingerprint(job: Job, settings: dict[str, Any], root: Path) -> str:
    """`effnet.fingerprint` of the settings and of the code the job runs: its script and the tree's files it imports,
    hashed as they are in `root` now (the process that runs them starts after this)."""
    from effnet.fingerprint import code_hash, fingerprint

    return fingerprint({"settings": settings, "code": code_hash(script_of(job.command, root), root=root)})


def is_done(job: Job, root: Path, done_dir: Path, wanted: str) -> bool:
    """A done record (written on success, committed with the results) with the same fingerprint, and the job's
    committed outputs still here."""
    record = read_record(done_dir, job.name)
    committed = job.stage.committed if job.stage else ()
    return record is not None and record.get("fingerprint") == wanted and all((root / o).exists() for o in committed)


def waiting_for(job: Job, jobs: list[Job], stages: dict[str, Stage], done_dir: Path) -> list[str]:
    """The window's jobs that write what `job` reads and are not done yet: it must wait for them."""
    if job.stage is None:
        return []
    names = {j.name for j in jobs}
    return [s.name for s in upstream(job.stage, stages) if s.name in names and read_record(done_dir, s.name) is None]


def needs_evaluation(root: Path, model: str) -> bool:
    """Whether `model` has weights on this machine that its metrics record (if any) predates."""
    weights, record = root / "models" / model / "model.pt", root / "metrics" / "models" / f"{model}.json"
    return weights.is_file() and (not record.is_file() or record.stat().st_mtime < weights.stat().st_mtime)


def run_stage(command: Sequence[str], *, cwd: Path, env: dict[str, str], log: Path, hard_end: float) -> int:
    """Run `command` in its own process group, its output to the console and `log`; kill the group at `hard_end`.

    Returns the exit status, or -9 when it had to be killed. Never leaves a process behind.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        sink.write(f"$ {' '.join(command)}\n".encode())
        sink.flush()
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
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
    torch.save(
        {
            "spec": payload["spec"],
            "state_dict_bf16": small,
            "ema": payload.get("ema_state_dict") is not None,
            "metrics": payload["metrics"],
            "train_config": payload["train_config"],
        },
        target,
    )


BF16_RECORD = "last.pt.bf16.json"  # beside a checkpoint shrunk to bf16 for the way home: its run resumes rounded


def bf16_resume_record(root: Path, model: str | None) -> dict[str, Any] | None:
    """The record beside `model`'s checkpoint that it was shrunk to bf16 (`pack_lease`), if the run resumes from one."""
    if model is None:
        return None
    path = root / "checkpoints" / model / BF16_RECORD
    if not (path.is_file() and (root / "checkpoints" / model / "last.pt").is_file()):
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {"note": f"{path.name} unreadable; the checkpoint was shrunk to bf16"}


LEASE_RECORDS = ("bench.json", "job.json", "job.log", "window.yaml")  # of the lease job's folder, packed under lease/
# without a run's archive: what the stages wrote since the job started
LEASE_OUTPUTS = ("metrics/models.csv", "metrics/models", "dvclive", "predictions", "gpu/done")
MAX_FILES = 8  # the device tool returns at most 8 files a call
FILE_LIMIT_BYTES = 16 * 2**20  # each at most 16 MiB


def trained_since(root: Path, curve: Path, since: float) -> bool:
    """Whether the run whose dvclive folder holds `curve` (dvclive/<model>/...) finished its training at or after
    `since`: its weights, models/<model>/model.pt, were written then."""
    rel = curve.relative_to(root / "dvclive")
    for folder in rel.parents:
        weights = root / "models" / folder / "model.pt"
        if folder != Path(".") and weights.is_file():
            return weights.stat().st_mtime >= since
    return False


def pack_lease(root: Path, lease_dir: Path, out: Path, models: Sequence[str] | None = None) -> list[Path]:
    """The last call's packing: the lease job's results as `results.tar[.NN]` and `results.md5` in `out`.

    The job's `run` archive (`lease_dir/out`, which `unpack` reads) is checked and unpacked
    into the staging; without one (the job was cut before it packed) its committed outputs are
    taken from the tree (`LEASE_OUTPUTS`, written since the job started; the curves only of runs whose training
    finished) under a status that says so. The job's records go
    under `lease/` (the benchmark JSON, its log, its plan). The checkpoint of each unfinished
    run (a checkpoint, no weights) is written again in bf16 (`shrink_checkpoint`), with a
    `BF16_RECORD` beside it that the resumed run's status and done record carry; these and
    the weights go in as space allows, smallest first (`transfer.pack`'s cap). At most
    `MAX_FILES` files of at most `FILE_LIMIT_BYTES` each, or a RecipeError.
    """
    from effnet.checkpoint import shrink_checkpoint

    scratch = Path(tempfile.mkdtemp(prefix="gpu-lease-"))
    try:
        run_out = lease_dir / "out"
        if (run_out / "results.md5").is_file():
            staging = transfer.extract([run_out], scratch / "run")
        else:
            staging = scratch / "results"
            staging.mkdir()
            try:  # the tree's committed files (an earlier run's) predate the job: they stay behind
                since = float(json.loads((lease_dir / "job.json").read_text())["started"])
            except (OSError, ValueError, KeyError, TypeError):
                since = 0.0
            outputs, partial = [], set()
            for rel in LEASE_OUTPUTS:
                source = root / rel
                for path in sorted(source.rglob("*")) if source.is_dir() else [source] if source.is_file() else []:
                    if rel == "dvclive" and path.is_file() and not trained_since(root, path, since):
                        partial.add(str(path.parent.relative_to(root)))  # a cut run's curves: its checkpoint holds
                        continue  # its history, and the resumed run writes them again
                    if path.is_file() and path.stat().st_mtime >= since:
                        target = staging / path.relative_to(root)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(path, target)
                        outputs.append(str(path.relative_to(root)))
            (staging / "status.json").write_text(
                json.dumps(
                    {
                        "window": "lease",
                        "started": time.strftime("%FT%TZ", time.gmtime()),
                        "jobs": {},
                        "outputs": [o for o in outputs if o != "gpu/done"],
                        "note": "the lease job left no archive of its run (cut before it packed): "
                        "outputs from the tree",
                        "left_behind": sorted(partial),
                    },
                    indent=2,
                )
                + "\n"
            )
        (staging / "left_out.txt").unlink(missing_ok=True)  # the run's own packing's: written again if need be
        (staging / "lease").mkdir(exist_ok=True)
        for name in LEASE_RECORDS:
            if (lease_dir / name).is_file():
                shutil.copyfile(lease_dir / name, staging / "lease" / name)
        extras_dir = scratch / "extras"
        extras_dir.mkdir()
        weights: list[tuple[Path, str]] = []
        for folder in ("weights", "checkpoints"):  # out of the staging: they go in as extras, under the cap
            if (staging / folder).is_dir():
                for path in sorted((staging / folder).rglob("*.pt")):
                    if folder == "weights":
                        moved = extras_dir / "weights" / path.name
                        moved.parent.mkdir(parents=True, exist_ok=True)
                        shutil.move(path, moved)
                        weights.append((moved, f"weights/{path.name}"))
                shutil.rmtree(staging / folder)
        checkpoints: list[tuple[Path, str]] = []
        names = (
            models
            if models is not None
            else sorted(p.name for p in (root / "checkpoints").glob("*") if p.is_dir())
            if (root / "checkpoints").is_dir()
            else []
        )
        for model in names:
            checkpoint = root / "checkpoints" / model / "last.pt"
            if not checkpoint.is_file() or (root / "models" / model / "model.pt").is_file():
                continue
            small = extras_dir / "checkpoints" / model / "last.pt"
            small.parent.mkdir(parents=True, exist_ok=True)
            try:
                size = shrink_checkpoint(checkpoint, small)
            except Exception as error:  # the results must still be packed
                (staging / "lease" / f"shrink_{model}.txt").write_text(f"bf16 copy failed: {error}\n")
                continue
            record = small.with_name(BF16_RECORD)
            record.write_text(
                json.dumps(
                    {
                        "model": model,
                        "dtype": "bfloat16",
                        "fp32_bytes": checkpoint.stat().st_size,
                        "bf16_bytes": size,
                        "shrunk": time.strftime("%FT%TZ", time.gmtime()),
                        "note": "checkpoint rounded to bf16 once for the way home "
                        "(effnet.checkpoint.shrink_checkpoint): the resumed run is not "
                        "bit-for-bit the uninterrupted one",
                    },
                    indent=2,
                )
                + "\n"
            )
            checkpoints.append((small, f"checkpoints/{model}/last.pt"))
        extras = []
        for small, name in sorted(checkpoints, key=lambda e: e[0].stat().st_size):
            extras += [(small, name), (small.with_name(BF16_RECORD), f"{Path(name).parent}/{BF16_RECORD}")]
        extras += sorted(weights, key=lambda e: e[0].stat().st_size)
        files = transfer.pack(staging, out, extras=extras)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    too_large = [p.name for p in files if p.stat().st_size > FILE_LIMIT_BYTES]
    if len(files) > MAX_FILES or too_large:
        raise RecipeError(f"packed {len(files)} files (at most {MAX_FILES}), over 16 MiB: {too_large or 'none'}")
    return files


def prepare_data(
    root: Path, store: Path, env: dict[str, str], log: Path, hard_end: float, window: dict[str, Any] | None = None
) -> Path:
    """Join the carried archive (atomically) and prepare the arrays with dvc.yaml's download stage under the
    window's `data.*` params; again only when those differ from the last preparation's. Returns the archive."""
    import yaml

    archive = transfer.join(store, root / "data" / "raw" / MIRROR_NAME)
    params_file = root / "params-data.yaml"
    write_params(window or {"coefficients": "published"}, root, archive, "published", params_file)
    params = yaml.safe_load(params_file.read_text())
    wanted = params["data"]
    record = root / "data" / "prepared-with.json"
    if (
        (root / "data" / "cifar100" / "meta.json").is_file()
        and record.is_file()
        and json.loads(record.read_text()) == wanted
    ):
        return archive
    command = (*dvc_stages(root, params)["download"].command, "--params", params_file.name)
    if run_stage(command, cwd=root, env=env, log=log, hard_end=hard_end):
        raise RecipeError(f"the download stage failed; see {log.name}")
    record.write_text(json.dumps(wanted) + "\n")
    return archive


def hardware(root: Path) -> str:
    lines = []
    try:
        lines.append(
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        )
    except (OSError, subprocess.TimeoutExpired):
        lines.append("nvidia-smi: not found")
    probe = (
        "import platform, torch, torchvision; "
        "print('python', platform.python_version(), 'torch', torch.__version__,"
        " 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available() and "
        "torch.cuda.get_device_name(0)); import os; print('cpus', os.cpu_count())"
    )
    lines.append(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=root).stdout.strip())
    return "\n".join(lines) + "\n"


def run_window(
    window_path: Path, *, root: Path, out: Path, store: Path, limit_s: float, only: list[str], prepared: bool = False
) -> int:
    """Run a window's jobs within `limit_s` seconds from now, then pack everything into `out`. Returns 0, 75 or 1.

    `prepared`: data/cifar100 is already written (a lease's `scripts/carry.py prepare`, which leaves
    data/ready.json): no archive is joined and the download stage does not run.
    """
    import yaml

    from effnet.train import RESUME_EXIT_STATUS

    start = time.time()
    window = load_window(window_path)
    reserve = window.get("reserve_s", {})
    pack_reserve, eval_reserve = float(reserve.get("pack", 30)), float(reserve.get("evaluate", 60))
    hard_end = start + limit_s - pack_reserve
    staging = Path(tempfile.mkdtemp(prefix="gpu-results-"))
    (staging / "logs").mkdir()
    done_dir = root / "gpu" / "done"
    status: dict[str, Any] = {
        "window": window["name"],
        "limit_s": limit_s,
        "started": time.strftime("%FT%TZ", time.gmtime(start)),
        "jobs": {},
    }
    commands = [f"# window {window['name']}: python3 scripts/gpu.py run {window_path} --limit-s {limit_s:g}"]
    jobs: list[Job] = []
    ran: list[Stage] = []  # the stages that finished (exit 0) in this call: their committed outputs come home (a
    # stage cut or failed leaves the tree's committed files of an earlier run, or a mix, which are not results)
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
        if prepared:
            if not (root / "data" / "cifar100" / "meta.json").is_file():
                raise RecipeError(
                    "prepared data asked for, but data/cifar100/meta.json is missing: "
                    "run scripts/carry.py prepare first"
                )
            archive = store / MIRROR_NAME  # never read: the download stage does not run
        else:
            archive = prepare_data(root, store, env, staging / "logs" / "download.log", hard_end, window)
        params_file = root / "params-gpu.yaml"
        write_params(window, root, archive, scaling, params_file)
        shutil.copyfile(params_file, staging / "params-gpu.yaml")
        (staging / "hardware.txt").write_text(hardware(root))
        params = yaml.safe_load(params_file.read_text())
        stages = dvc_stages(root, params)
        benchmarks = (
            [
                Job(name, (*command, *(("--archive", str(archive)) if name == "bench_loader" else ())), required=False)
                for name, command in BENCHMARKS.items()
            ]
            if window.get("bench")
            else []
        )
        jobs = jobs_for(window, stages, params_file.name, coefficients)

        for job in benchmarks + jobs:
            if only and job.name not in only and (job.model or "") not in only:
                continue
            settings = job_settings(job, params, params_file, coefficients, stages, done_dir)
            wanted = job_fingerprint(job, settings, root)
            if is_done(job, root, done_dir, wanted):
                print(f"{job.name}: finished earlier with the same settings, skipped", flush=True)
                status["jobs"][job.name] = {"status": "done earlier"}
                continue
            earlier = read_record(done_dir, job.name)
            if earlier is not None:
                changed = "code (its script's imports)" if earlier.get("settings") == settings else "settings"
                print(f"{job.name}: finished earlier with other {changed}: runs again", flush=True)
            waiting = waiting_for(job, jobs, stages, done_dir)
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
            resumed = bf16_resume_record(root, job.model)  # read before the run: a finished run removes its checkpoint
            rc = run_stage(
                job.command,
                cwd=root,
                env=env,
                log=staging / "logs" / f"{file_stem(job.name)}.log",
                hard_end=hard_end - eval_reserve,
            )
            entry: dict[str, Any] = {"exit": rc, "seconds": round(time.time() - began, 1)}
            if resumed is not None:
                entry["resumed_from_bf16"] = resumed
            if rc == 0:
                entry["status"] = "done"
                if job.stage is not None:
                    ran.append(job.stage)
                done_dir.mkdir(parents=True, exist_ok=True)
                record_path(done_dir, job.name).write_text(
                    json.dumps(
                        {
                            "job": job.name,
                            "command": list(job.command),
                            "settings": settings,
                            "fingerprint": wanted,
                            "finished": time.strftime("%FT%TZ", time.gmtime()),
                            **({"resumed_from_bf16": resumed} if resumed is not None else {}),
                        },
                        indent=2,
                    )
                    + "\n"
                )
            elif not job.required:
                entry["status"] = f"failed ({rc}): see its log"
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
        unevaluated = [job.model for job in jobs if job.model and needs_evaluation(root, job.model)]
        if unevaluated and window.get("evaluate", True):
            evaluations = [writer(f"metrics/models/{model}.json", stages) for model in unevaluated]
            failed = 0
            for stage in [s for s in evaluations if s is not None] + [stages["collect"]]:
                if failed:  # one failed or cut: the rest are not started
                    break
                command = (*stage.command, "--params", params_file.name)
                commands.append(" ".join(command))
                failed = run_stage(command, cwd=root, env=env, log=staging / "logs" / "evaluate.log", hard_end=hard_end)
                if failed == 0:
                    ran.append(stage)
            if failed == -9:  # cut at the hard limit: the same call again evaluates what is left
                status["jobs"]["evaluate"] = {
                    "exit": failed,
                    "status": "resume: cut at the hard time limit, run the same call again",
                }
                exit_status = exit_status or RESUME_EXIT_STATUS
            else:
                status["jobs"]["evaluate"] = {
                    "exit": failed,
                    "status": "done" if failed == 0 else "failed: see its log",
                }
                if failed:
                    exit_status = exit_status or 1
    except (RecipeError, TransferError) as error:
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
        files = collect_and_pack(jobs, ran, root, staging, out, status, commands)
        print(
            f"packed {', '.join(p.name for p in files)} in {out} "
            f"({sum(p.stat().st_size for p in files) / 2**20:.1f} MiB)"
            f" after {time.time() - start:.0f} s; exit {exit_status}",
            flush=True,
        )
        shutil.rmtree(staging, ignore_errors=True)
    return exit_status


def collect_and_pack(
    jobs: list[Job], ran: list[Stage], root: Path, staging: Path, out: Path, status: dict[str, Any], commands: list[str]
) -> list[Path]:
    """Copy this call's results into `staging` and pack them (`effnet.transfer.pack`): the committed outputs of the
    stages that finished in it (the repository copy also holds the committed files of earlier runs), the done records,
    unfinished checkpoints, then the weights of the models it trained in bf16."""
    outputs = sorted({o for stage in ran for o in stage.committed if (root / o).exists()})
    status["outputs"] = outputs  # what `unpack` puts in place
    (staging / "status.json").write_text(json.dumps(status, indent=2) + "\n")
    (staging / "commands.txt").write_text("\n".join(commands) + "\n")
    for rel in ["gpu/done", *outputs]:
        source = root / rel
        if source.is_dir():
            shutil.copytree(source, staging / rel, dirs_exist_ok=True)
        elif source.is_file():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staging / rel)
    models = [job for job in jobs if job.model]
    extras: list[tuple[Path, str]] = []
    weights_dir = Path(tempfile.mkdtemp(prefix="gpu-weights-"))
    try:
        for job in models:  # unfinished runs first (a lost machine then costs only the unfinished epoch), small first
            checkpoint = root / "checkpoints" / job.model / "last.pt"
            if checkpoint.is_file() and not (root / "models" / job.model / "model.pt").is_file():
                extras.append((checkpoint, f"checkpoints/{job.model}/last.pt"))
        weights = []
        for job in models:  # trained in this call: an earlier call's archive brought the others home
            model_pt = root / "models" / job.model / "model.pt"
            if model_pt.is_file() and status["jobs"].get(job.name, {}).get("status") == "done":
                try:
                    target = weights_dir / f"{job.model}.ema-bf16.pt"
                    bf16_weights(model_pt, target)
                    weights.append((target, f"weights/{target.name}"))
                except Exception as error:  # the archive must still be written
                    (staging / "logs" / f"weights_{job.model}.txt").write_text(f"bf16 copy failed: {error}\n")
        extras = sorted(extras, key=lambda e: e[0].stat().st_size) + sorted(weights, key=lambda e: e[0].stat().st_size)
        return transfer.pack(staging, out, extras=extras)
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
        table_writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        table_writer.writeheader()
        table_writer.writerows(rows.values())
    os.replace(tmp, table)
    return kept


CALL_RECORDS = (
    "status.json",
    "commands.txt",
    "hardware.txt",
    "params-gpu.yaml",
    "left_out.txt",
    "logs",
    "metrics/models.csv",
    "lease",
)  # kept under gpu/<window>/<call's start>/


def unpack(sources: list[Path], root: Path) -> list[str]:
    """Join and check a call's archive, then copy its results into `root`; returns the paths to commit.

    The stages' committed outputs (status.json's `outputs`: metrics/models/*.json, predictions/,
    dvclive/<model>/, metrics/search.json, ...) and gpu/done/ go where the DVC stages write them,
    metrics/models.csv merged into the table; the call's records (status, commands, hardware,
    logs, its models.csv) under gpu/<window>/<call's start>/; weights to models/<model>/ema-bf16.pt
    (ignored by git: too large) and unfinished checkpoints to checkpoints/.
    """
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        results = transfer.extract(sources, Path(tmp))
        status = json.loads((results / "status.json").read_text())
        # one folder per call, so that every call's status and logs are kept
        window_dir = Path("gpu") / status["window"] / status["started"].replace("-", "").replace(":", "")
        for rel in ["gpu/done", *status.get("outputs", [])]:
            source, target = results / rel, root / rel
            if rel == "metrics/models.csv" or not source.exists():
                continue
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
            written.append(rel)
        (root / window_dir).mkdir(parents=True, exist_ok=True)
        for name in CALL_RECORDS:
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
                print(
                    f"metrics/models.csv: rows of an earlier run kept beside this call's: {', '.join(kept)} "
                    "(say which run each row is from before publishing a table)",
                    file=sys.stderr,
                )
        for checkpoint in (
            sorted((results / "checkpoints").glob("*/last.pt")) if (results / "checkpoints").is_dir() else []
        ):
            target = root / "checkpoints" / checkpoint.parent.name / "last.pt"  # carry it to resume on a fresh machine
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(checkpoint, target)
            record = checkpoint.with_name(BF16_RECORD)  # it resumes from bf16: its result must say so
            if record.is_file():
                shutil.copyfile(record, target.with_name(BF16_RECORD))
            else:
                target.with_name(BF16_RECORD).unlink(missing_ok=True)
        if (results / "lease" / "bench.json").is_file():  # the clock's measured GPU rates (effnet.clock.LEASE_BENCH)
            target = root / "benchmarks" / "bench_lease.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(results / "lease" / "bench.json", target)
            written.append("benchmarks/bench_lease.json")
        for w in sorted((results / "weights").glob("*.ema-bf16.pt")) if (results / "weights").is_dir() else []:
            target = root / "models" / w.name.removesuffix(".ema-bf16.pt") / "ema-bf16.pt"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(w, target)
    return written


# --------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    store = Path(os.environ.get("EFFNET_CARRY_STORE", "/root/carry"))  # outside the repository copy
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="here: split the data into carry parts that fit with the tree")
    p.add_argument(
        "--archive",
        type=Path,
        default=Path(os.environ.get("CIFAR100_ARCHIVE", ROOT.parent / "shared/data" / MIRROR_NAME)),
    )
    p.add_argument("--carry", type=Path, default=ROOT / ".carry")
    p.add_argument("--margin-mib", type=float, default=6.0, help="room under the carry limit left for the tree to grow")
    p = sub.add_parser("stash", help="device: keep a carried part outside the repository copy")
    p.add_argument("part", type=Path)
    p.add_argument("--store", type=Path, default=store)
    p = sub.add_parser("data", help="device: join the carried parts and prepare the arrays (download stage)")
    p.add_argument("window", type=Path, nargs="?", help="the window whose data.* params to use (default params.yaml's)")
    p.add_argument("--store", type=Path, default=store)
    p = sub.add_parser("run", help="device: run a window's jobs, then pack the results into $OUT")
    p.add_argument("window", type=Path)
    p.add_argument("--limit-s", type=float, default=540.0, help="seconds for the whole call (under timeout_s)")
    p.add_argument("--only", nargs="*", default=[], help="jobs (stages) or models of the window to run")
    p.add_argument("--store", type=Path, default=store)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu-out")))
    p = sub.add_parser("pack-lease", help="device: pack a lease job's results into at most 8 files (docs/lease.md)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu-out")))
    p.add_argument("--lease-dir", type=Path, default=Path(os.environ.get("EFFNET_LEASE_DIR", "/root/lease")))
    p = sub.add_parser("unpack", help="here: check and unpack a call's archive into the repository")
    p.add_argument("sources", type=Path, nargs="+", help="the call's files (or their folder)")
    p.add_argument("--repo", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            tree = transfer.tree_bytes(ROOT)
            largest = int(transfer.CALL_LIMIT_BYTES - args.margin_mib * 2**20) - tree
            if not args.archive.is_file():
                raise RecipeError(f"{args.archive}: no such file; pass --archive with the CIFAR-100 mirror")
            size = args.archive.stat().st_size
            count = -(-size // largest)
            part_bytes = -(-size // count)  # as few parts as fit, of equal size: the most room left in each call
            if subprocess.run(["git", "check-ignore", "-q", str(args.carry / "part1")], cwd=ROOT).returncode != 0:
                raise RecipeError(
                    f"{args.carry} is not ignored by git: it would travel with every call; "
                    "keep it under the repository's ignored /.carry/"
                )
            folders = transfer.split(args.archive, args.carry, part_bytes=part_bytes, expected_md5=MIRROR_ARCHIVE_MD5)
            print(
                f"tree {tree / 2**20:.2f} MiB (git ls-files plus untracked, unignored files); "
                f"{len(folders)} parts of at most {part_bytes / 2**20:.2f} MiB; each call carries at most "
                f"{(tree + part_bytes) / 2**20:.2f} MiB of the {transfer.CALL_LIMIT_BYTES / 2**20:g} MiB allowed:"
            )
            for folder in folders:
                size = sum(f.stat().st_size for f in folder.iterdir())
                print(
                    f"  {folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder}: "
                    f"{size / 2**20:.2f} MiB, with the tree {(size + tree) / 2**20:.2f} MiB"
                )
        elif args.command == "stash":
            copied = transfer.stash(args.part, args.store)
            print(f"stashed {', '.join(copied) or 'nothing'} in {args.store}")
        elif args.command == "data":
            window = load_window(args.window) if args.window else None
            archive = prepare_data(
                ROOT, args.store, dict(os.environ), ROOT / "data" / "download.log", time.time() + 540, window
            )
            print(f"{archive}: joined, md5 checked against its manifest; arrays in data/cifar100")
        elif args.command == "run":
            # the driver itself must not start before the repository's root is the working directory
            os.chdir(ROOT)
            return run_window(
                args.window, root=ROOT, out=args.out, store=args.store, limit_s=args.limit_s, only=args.only
            )
        elif args.command == "pack-lease":
            files = pack_lease(ROOT, args.lease_dir, args.out)
            print(
                f"packed {', '.join(p.name for p in files)} in {args.out} "
                f"({sum(p.stat().st_size for p in files) / 2**20:.1f} MiB)"
            )
        elif args.command == "unpack":
            for rel in unpack(args.sources, args.repo):
                print(rel)
    except (RecipeError, TransferError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
