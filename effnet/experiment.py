"""A training experiment: one network of the study trained for every seed of `train.seeds`, logged and saved.

`train_and_save` is the body of every training stage (matrix, phi, scaling study): under
torchrun or as one process, rank 0 logs each epoch to a `Logger` (the stage's DVCLive
adapter, or `PlainLive`, which writes DVCLive's files without dvclive) and writes the
weights file; with several seeds, finished seeds are kept so that a rerun after an
interruption does not train them again. Knows nothing of DVC: the stage passes its logger.
Imports torch (through the trainer): the stages that only read tables and draw figures use
`effnet.cli` alone.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import yaml

from effnet import cli, study
from effnet.checkpoint import remove_checkpoint
from effnet.config import Params, TrainConfig
from effnet.distributed import cleanup, init_distributed
from effnet.fingerprint import fingerprint
from effnet.io import write_atomic, write_json
from effnet.models import ModelSpec, spec_for_name
from effnet.train import TrainResult, train
from effnet.weights import save_weights


def model_spec(name: str, params: Params, coefficients_path: Path | None) -> ModelSpec:
    """The spec of a matrix model under `network:`, with `train.drop_path_rate`.

    EfficientNets take the coefficients `effnet.study.searched_coefficients` decides on (the
    searched ones from `coefficients_path`, or None: the published table); the baselines
    never read them.
    """
    entry = study.find(name, study.matrix())
    coefficients = (
        None if entry is None or entry.is_baseline else study.searched_coefficients(params.network, coefficients_path)
    )
    return dataclasses.replace(
        spec_for_name(name, params.network, coefficients), drop_path_rate=params.train.drop_path_rate
    )


class Logger(Protocol):
    """What a training stage logs each epoch to: DVCLive's `Live`, or `PlainLive` without it."""

    step: int

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metric(self, name: str, value: float) -> None: ...
    def next_step(self) -> None: ...
    def end(self) -> None: ...


OpenLive = Callable[[Path], Logger]  # a logger for a directory, started afresh; a stage's adapter (e.g. DVCLive)


class PlainLive:
    """DVCLive's file layout without dvclive, for machines that lack it (the bare GPU machine).

    Writes what `dvc plots` and `dvc metrics` read from a DVCLive directory: one
    `plots/metrics/<name>.tsv` per metric (columns step and the metric's last name) and
    `metrics.json` with the latest values, nested by the '/' in metric names.
    """

    def __init__(self, directory: Path) -> None:
        self.dir, self.step, self._latest = Path(directory), 0, {}
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_params(self, params: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def log_metric(self, name: str, value: float) -> None:
        path = self.dir / "plots" / "metrics" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with path.open("a") as f:
            f.write(f"step\t{name.split('/')[-1]}\n" if new else "")
            f.write(f"{self.step}\t{value}\n")
        node = self._latest
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    def next_step(self) -> None:
        write_json(self.dir / "metrics.json", {**self._latest, "step": self.step})
        self.step += 1

    def end(self) -> None:
        pass


def open_logger(open_live: OpenLive | None, directory: Path, params: dict[str, Any]) -> Logger:
    """`open_live(directory)` with `params` logged; `PlainLive` when there is none or its package is not installed.

    The logger must start afresh (DVCLive: `resume=False`): a resumed training run replays the
    epochs of its checkpoint through the callback (see `effnet.train.train`), so the curves come
    out whole, without the gaps or repeated steps that appending to the old files could leave.
    """
    try:
        live = open_live(directory) if open_live is not None else PlainLive(directory)
    except ImportError:  # the bare GPU machine has no dvclive; PlainLive writes the same files
        live = PlainLive(directory)
    live.log_params(params)
    return live


def live_callback(live: Logger) -> Callable[[int, dict[str, float]], None]:
    """A `train(callback=...)` that logs one DVCLive step per epoch (step = epoch - 1).

    First checks that params.yaml still holds the values the stage started with
    (`effnet.cli.check_params_unchanged`): a second experiment that rewrote it stops this
    one at the epoch's checkpoint, before more is logged or written.
    """

    def log(epoch: int, metrics: dict[str, float]) -> None:
        cli.check_params_unchanged()
        live.step = epoch - 1
        for key, value in metrics.items():
            live.log_metric(key, value)
        live.next_step()

    return log


def _train_and_save_seed(
    spec: ModelSpec,
    cfg: TrainConfig,
    *,
    data: Path,
    out: Path,
    live_dir: Path,
    checkpoints: Path,
    extra: dict[str, Any] | None = None,
    open_live: OpenLive | None = None,
) -> TrainResult:
    """The body of every training stage, under torchrun or as one process.

    Joins the process group (if torchrun started several processes), trains with resumable
    checkpoints in `checkpoints`, and on rank 0 logs each epoch to `open_logger(open_live, live_dir)`
    (params: the spec, the recipe and `extra`), writes `out/model.pt` and only then removes
    the checkpoints. Returns the result on every rank. A run stopped by its time budget
    ($EFFNET_DEADLINE or $EFFNET_TIME_BUDGET_S, see `effnet.train.deadline_from_env`) raises
    `TimeBudgetReached`, a SystemExit with status 75: no model.pt, the checkpoints kept.
    """
    dist = init_distributed()
    try:
        live = None
        if dist.is_main:
            print(
                f"{spec.name}: {spec.arch} width {spec.width:g} depth {spec.depth:g} at "
                f"{spec.resolution}x{spec.resolution}, {cfg.epochs} epochs, batch {cfg.batch_size} over "
                f"{dist.world_size} process(es) on {dist.device}"
            )
            smaller = max(1, cfg.batch_size // 2)
            cli.if_killed_say(
                f"{spec.name} at train.batch_size {cfg.batch_size}",
                f"Try a smaller batch, e.g. dvc exp run -S train.batch_size={smaller} "
                "(the learning rate scales with it)",
            )
            logged = {"model": spec.to_dict(), "train": dataclasses.asdict(cfg), **(extra or {})}
            live = open_logger(open_live, live_dir, logged)
        result = train(
            spec,
            cfg,
            data,
            checkpoint_dir=checkpoints,
            dist=dist,
            callback=live_callback(live) if live is not None else None,
        )
        if dist.is_main:
            cli.check_params_unchanged()  # the weights must be of the params DVC will record
            save_weights(
                Path(out) / "model.pt",
                spec,
                cfg,
                model=result.model,
                ema=result.ema,
                metrics=result.metrics,
                history=result.history,
                train_time_s=result.train_time_s,
                extra=extra,
            )
            remove_checkpoint(checkpoints)
            live.end()
            m = result.metrics
            print(
                f"wrote {Path(out) / 'model.pt'}: val top-1 {m['val/top1']:.4f} (EMA {m['val/top1_ema']:.4f}) "
                f"in {result.train_time_s:.0f} s"
            )
        return result
    finally:
        cleanup()


def train_and_save(
    spec: ModelSpec,
    cfg: TrainConfig,
    *,
    data: Path,
    out: Path,
    live_dir: Path,
    checkpoints: Path,
    extra: dict[str, Any] | None = None,
    open_live: OpenLive | None = None,
) -> None:
    """Train and save `cfg.seeds` networks of `spec` (`train.seeds`), seed k with `cfg.seed + k`.

    Seed 0 writes `out/model.pt`, the log `live_dir` and checkpoints `checkpoints` exactly as a
    single-seed run; seed k > 0 writes `out/seed<k>/model.pt` and `live_dir/seed<k>`, with its
    checkpoints in `<checkpoints>_seed<k>`. With several seeds, each finished seed's weights and
    DVCLive run are also kept in `<checkpoints>_seeds/seed<k>/`, stamped with a fingerprint of the
    settings and the training code, until every seed is saved: DVC removes a stage's outputs
    before it reruns, and a rerun after an interruption then restores the finished seeds instead
    of training them again (and resumes the seed in progress from its checkpoint).
    """
    if cfg.seeds == 1:
        _train_and_save_seed(
            spec, cfg, data=data, out=out, live_dir=live_dir, checkpoints=checkpoints, extra=extra, open_live=open_live
        )
        return
    main_rank = int(os.environ.get("RANK", "0")) == 0  # torchrun's; the process group is joined per seed
    kept_dir = Path(checkpoints).with_name(f"{Path(checkpoints).name}_seeds")
    for k in range(cfg.seeds):
        seed_cfg = dataclasses.replace(cfg, seed=cfg.seed + k, seeds=1)
        below = Path(f"seed{k}") if k else Path()
        seed_out, seed_live = Path(out) / below, Path(live_dir) / below
        kept = kept_dir / f"seed{k}"
        stamp = fingerprint(
            {"spec": spec.to_dict(), "train": dataclasses.asdict(seed_cfg), "extra": extra}, [Path(__file__)]
        )
        if (kept / "fingerprint").is_file() and (kept / "fingerprint").read_text() == stamp:
            if main_rank:
                write_atomic(seed_out / "model.pt", functools.partial(shutil.copyfile, kept / "model.pt"))
                shutil.rmtree(seed_live, ignore_errors=True)
                shutil.copytree(kept / "live", seed_live)
                print(f"{spec.name} seed {seed_cfg.seed}: finished earlier, restored from {kept}")
            continue
        _train_and_save_seed(
            spec,
            seed_cfg,
            data=data,
            out=seed_out,
            live_dir=seed_live,
            checkpoints=Path(checkpoints) if k == 0 else Path(f"{checkpoints}_seed{k}"),
            extra=extra,
            open_live=open_live,
        )
        if main_rank:
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(seed_live, kept / "live", ignore=shutil.ignore_patterns("seed*"))
            shutil.copyfile(seed_out / "model.pt", kept / "model.pt")
            (kept / "fingerprint").write_text(stamp)  # last: a kept seed without it is not used
    if main_rank:
        shutil.rmtree(kept_dir, ignore_errors=True)
