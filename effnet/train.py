"""Training one network on CIFAR-100: the recipe, mixed precision, DDP, resumable checkpoints.

The recipe follows the paper's Section 5.2 where it carries over to CIFAR and says where it
does not:

- Optimiser: SGD with Nesterov momentum by default (`train.optimizer: sgd`), the usual choice
  for CIFAR; `rmsprop` is the paper's (decay 0.9, momentum 0.9, epsilon 1e-3; see
  `make_optimizer` for how PyTorch's epsilon differs from TensorFlow's).
- Learning rate: `train.lr` per 256 images, scaled linearly with the global batch (Goyal et
  al., 2017); linear warmup, then a cosine decay that reaches exactly 0 at the last step,
  stepped per optimiser step. The paper decays by 0.97 every 2.4 epochs over ~350 ImageNet
  epochs; a cosine needs no retuning when the budget shrinks to a few CIFAR epochs.
- Weight decay on convolution and linear weights only, not on BatchNorm weights or biases.
- Label smoothing (0.1 in the paper's code), stochastic depth and dropout (both in the
  model, see `effnet.efficientnet`), an exponential moving average of the weights (the
  paper's code: decay 0.9999 with TensorFlow's `num_updates` warm-up), gradient clipping.
- Augmentation is CIFAR's (crop, flip, cutout; `effnet.data.DeviceLoader`), not AutoAugment.

Engineering: bf16 autocast on CUDA by default (fp16 with a gradient scaler, or fp32, on
request), channels_last, cuDNN autotuning and TF32 on CUDA, optional `torch.compile`; one
process per GPU through torchrun and DistributedDataParallel; no host synchronisation inside
a training step (loss and accuracy are summed on the device and read once per epoch); a
checkpoint at the end of every epoch (format: `effnet.checkpoint`) from which an interrupted
run resumes and, on the CPU, finishes bit for bit as if it had never stopped; a wall-clock
deadline at which the run stops between epochs with exit status 75 ("resume me").

This module imports torch, numpy, tqdm and `effnet` only: it takes a logging callback rather
than knowing about DVCLive, so it runs on a bare GPU machine.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from effnet.checkpoint import (
    CHECKPOINT_NAME,
    changed_settings,
    load_checkpoint,
    restore_checkpoint,
    run_fingerprint,
    save_checkpoint,
    settings,
)
from effnet.config import TrainConfig
from effnet.data import DeviceLoader, load_meta, load_split, subset_per_class
from effnet.distributed import Distributed, all_reduce_min, all_reduce_sum, broadcast_
from effnet.models import ModelSpec, build_model, set_bn_momentum

METRIC_KEYS = (
    "train/loss",
    "train/top1",
    "val/top1",
    "val/top5",
    "val/top1_ema",
    "val/top5_ema",
    "lr",
    "images_per_s",
    "epoch_time_s",
)  # accuracies are fractions in [0, 1]

Callback = Callable[[int, dict[str, float]], None]


# The exit status of a run stopped by its time budget: sysexits.h's EX_TEMPFAIL, "try again later".
RESUME_EXIT_STATUS = 75
DEADLINE_ENV = "EFFNET_DEADLINE"  # an absolute deadline, in seconds since the Unix epoch (shared by every process)
BUDGET_ENV = "EFFNET_TIME_BUDGET_S"  # a budget in seconds from when this module was imported
# Where a run stopped by its budget also says so (one line: "<checkpoint>\t<epochs done>/<epochs>"), for
# wrappers that see only `dvc repro`'s own exit status (255 for any failed stage), not the trainer's 75.
RESUME_FILE_ENV = "EFFNET_RESUME_FILE"
_IMPORTED_AT = time.time()
# Divergence: a training loss that stays above DIVERGENCE_FACTOR x ln(classes) (the loss of a uniform
# guess, where every run starts) for DIVERGENCE_STEPS consecutive steps, or a whole shorter epoch,
# stops the run as a non-finite loss does. Healthy runs stay below ln(classes) + a few after their
# first steps; 10x is a loss no learning run reaches and that every diverged one passes.
DIVERGENCE_FACTOR = 10.0
DIVERGENCE_STEPS = 20
# Seconds between progress lines inside an epoch when stderr is no terminal (DVC's logs, a pipe);
# $EFFNET_PROGRESS_S overrides it, 0 turns the lines off. A terminal gets tqdm's bar instead.
PROGRESS_INTERVAL_S = 60.0
PROGRESS_ENV = "EFFNET_PROGRESS_S"


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, out of memory, unusable settings). The message says why."""


class TimeBudgetReached(SystemExit):
    """The run stopped at an epoch's end because the next epoch would end past its deadline.

    The checkpoint of the finished epochs is written; running the same command again
    resumes there. A `SystemExit` with status `RESUME_EXIT_STATUS` (75), so that any stage
    that trains exits with that status without catching it, `except Exception` never
    mistakes it for a result, and no weights file is written.
    """

    def __init__(self, message: str) -> None:
        super().__init__(RESUME_EXIT_STATUS)
        self.message = message

    def __str__(self) -> str:
        return self.message


def deadline_from_env(environ: dict[str, str] | None = None) -> float | None:
    """The training deadline (seconds since the epoch) from $EFFNET_DEADLINE and/or $EFFNET_TIME_BUDGET_S, else None.

    The earlier of the two counts. A driver that runs several stages in one time slot
    exports one EFFNET_DEADLINE for all of them; EFFNET_TIME_BUDGET_S counts from the
    start of this process (the import of this module).
    """
    environ = os.environ if environ is None else environ
    deadlines = []
    for name, offset in ((DEADLINE_ENV, 0.0), (BUDGET_ENV, _IMPORTED_AT)):
        value = environ.get(name, "").strip()
        if not value:
            continue
        try:
            seconds = float(value)
        except ValueError:
            raise TrainingError(f"environment variable {name} must be a number of seconds, got {value!r}") from None
        if not seconds > 0:
            raise TrainingError(f"environment variable {name} must be positive, got {value!r}; unset it for no budget")
        deadlines.append(offset + seconds)
    return min(deadlines) if deadlines else None


def repeated_budget(environ: dict[str, str] | None = None) -> float | None:
    """The seconds of $EFFNET_TIME_BUDGET_S when it sets the deadline (every rerun gets it again), else None.

    An absolute $EFFNET_DEADLINE is a time slot that a later call replaces with its own; a
    budget in seconds is the same for every rerun, so a budget shorter than one epoch never
    makes progress.
    """
    environ = os.environ if environ is None else environ
    deadline = deadline_from_env(environ)
    value = environ.get(BUDGET_ENV, "").strip()
    if deadline is None or not value or deadline != _IMPORTED_AT + float(value):
        return None
    return float(value)


def note_resume(checkpoint_path: Path, epoch: int, epochs: int, environ: dict[str, str] | None = None) -> None:
    """Append '<checkpoint>\t<epoch>/<epochs>' to $EFFNET_RESUME_FILE, if set: this run stopped to be resumed.

    DVC turns every failed stage into its own exit status (255), so a wrapper of `dvc repro`
    or `dvc exp run` cannot see the trainer's 75; it sets EFFNET_RESUME_FILE to an empty
    file and, when the run fails, resumes if the file has lines and reports a failure if not
    (scripts/exp.sh does, and exits 75 itself).
    """
    target = (os.environ if environ is None else environ).get(RESUME_FILE_ENV, "").strip()
    if target:
        with open(target, "a") as f:
            f.write(f"{checkpoint_path}\t{epoch}/{epochs}\n")


@dataclass
class TrainResult:
    model: nn.Module  # raw weights, unwrapped from DDP, eval mode
    ema: nn.Module | None  # the averaged network (same class as `model`), eval mode; None when train.ema_decay = 0
    metrics: dict[str, float]  # the last epoch's entry of `history`
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per epoch: "epoch" + METRIC_KEYS
    train_time_s: float = 0.0  # wall time of all epochs (training and validation), over resumptions


# --------------------------------------------------------------------------------------
# the recipe
# --------------------------------------------------------------------------------------


def scaled_lr(cfg: TrainConfig) -> float:
    """Peak learning rate: `train.lr` per 256 images times the global batch (Goyal et al., 2017)."""
    return cfg.lr * cfg.batch_size / 256


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weights of convolutions and linear layers decay; BatchNorm weights and biases do not.

    Tensors with ndim <= 1 are exactly the BatchNorm scales and shifts and every bias.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum, or the paper's RMSProp (Section 5.2), at `scaled_lr(cfg)`.

    RMSProp uses decay (PyTorch's `alpha`) 0.9, `train.momentum` (the paper: 0.9) and
    epsilon 1e-3 as the paper does, but PyTorch adds epsilon *outside* the square root,
    w -= lr * g / (sqrt(v) + eps), where TensorFlow adds it inside, sqrt(v + eps), and
    TensorFlow also starts v at 1 rather than 0. For weights whose gradients are tiny the
    TensorFlow denominator is about sqrt(1e-3) = 0.03, PyTorch's about 1e-3: expect larger
    early steps. The paper's "0.256" is the rate at batch 4096: the official TensorFlow code
    uses 0.016 per 256 images (scaled linearly, as here) with weight decay 1e-5, so start
    RMSProp runs at `train.lr: 0.016`, `train.weight_decay: 1e-5`, or lower.
    """
    groups = parameter_groups(model, cfg.weight_decay)
    lr = scaled_lr(cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, eps=1e-3, momentum=cfg.momentum)
    raise TrainingError(f"unknown optimizer {cfg.optimizer!r}; train.optimizer must be sgd or rmsprop")


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the peak learning rate for optimiser step `step` (0-based) of `total_steps`.

    Linear warmup over the first `warmup_steps` steps (1/W, 2/W, ..., 1), then a half cosine
    from 1 down to exactly 0 at the last step, `total_steps - 1`. A warmup longer than the
    run is cut short so that the last step still has factor 0 (a one-step run has 1).
    """
    warmup_steps = min(warmup_steps, max(0, total_steps - 2))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = total_steps - 1 - warmup_steps
    if decay_steps <= 0:
        return 1.0  # a single step: nothing to decay
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))  # cos(pi) = -1 exactly, so the last factor is 0.0


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """`lr_factor` as a per-step LambdaLR: call `.step()` after every optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup_steps))


class EMA(AveragedModel):
    """Exponential moving average of the weights and the BatchNorm buffers (`use_buffers=True`).

    As in the paper's code (TensorFlow's `ExponentialMovingAverage` with `num_updates`), the
    decay after n updates is min(decay, (1 + n) / (10 + n)), so the average follows the
    weights closely early on and short runs still get a useful EMA. `AveragedModel`'s own
    `update_parameters` reads its update counter on the host (`if self.n_averaged == 0`), a
    GPU synchronisation every step; `update` below does the same average without one.
    Integer buffers (BatchNorm's `num_batches_tracked`) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, use_buffers=True)
        self.decay = decay
        self._pairs: tuple[list[torch.Tensor], ...] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        """Move the average towards `model` (the raw, unwrapped network) after update `num_updates`."""
        if self._pairs is None:
            averaged, current, integer_averaged, integer_current = [], [], [], []
            for a, m in zip(
                itertools.chain(self.module.parameters(), self.module.buffers()),
                itertools.chain(model.parameters(), model.buffers()),
                strict=True,
            ):
                floating = a.is_floating_point()
                (averaged if floating else integer_averaged).append(a.detach())
                (current if floating else integer_current).append(m.detach())
            self._pairs = (averaged, current, integer_averaged, integer_current)
        averaged, current, integer_averaged, integer_current = self._pairs
        decay = min(self.decay, (1 + num_updates) / (10 + num_updates))
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
        if integer_averaged:  # one call for every BatchNorm's counter, not one kernel each (201 in DenseNet-201)
            torch._foreach_copy_(integer_averaged, integer_current)
        self.n_averaged += 1


def shared_state(model: nn.Module, ema: EMA | None, device: torch.device) -> list[torch.Tensor]:
    """The tensors that every rank must hold equal besides the parameters: BatchNorm buffers and the EMA.

    Only those on the training device: the EMA's update counter (`n_averaged`) stays on the
    CPU, which NCCL cannot broadcast.
    """
    tensors = list(model.buffers()) + (list(ema.state_dict().values()) if ema is not None else [])
    return [t for t in tensors if t.device == device]


# The architectures that train faster under bf16 autocast than in fp32 on a CPU with native bf16 (AMX-BF16 /
# AVX512-BF16), both channels_last, measured by benchmarks/bench_cpu.py on this project's 2-core Xeon at 16 px
# (batch 128): ResNet-50 1.63x and DenseNet-201 (see benchmarks/README.md); the EfficientNets run slower in bf16
# (B0 0.53x, the compound 4x model 0.80x): their depthwise convolutions and squeeze-excitation layers gain nothing
# from the matrix units and pay the casts. So a CPU run of `train.precision: bf16` autocasts these and only these.
CPU_BF16_ARCHS = frozenset({"resnet50", "resnet152", "densenet201"})


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (oneDNN's check: AVX512-BF16 or AMX), so bf16 can be faster."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def autocast_dtype(
    precision: str, device: torch.device, *, cpu_bf16: bool | None = None, arch: str | None = None
) -> torch.dtype | None:
    """The autocast dtype of `train.precision` on `device`, or None for fp32.

    On CUDA `bf16` and `fp16` autocast as asked. On the CPU `bf16` means the faster of bf16
    and fp32 for the network, by measurement: bf16 autocast for the architectures of
    `CPU_BF16_ARCHS` on a CPU with native bf16 (`cpu_has_bf16`), fp32 for every other network
    and CPU; `cpu_bf16` True or False overrides that choice (benchmarks, tests). `fp16` and
    `fp32` run fp32 on the CPU.
    """
    if device.type == "cuda":
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if precision != "bf16":
        return None
    if cpu_bf16 is None:
        cpu_bf16 = arch in CPU_BF16_ARCHS and cpu_has_bf16()
    return torch.bfloat16 if cpu_bf16 else None


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    dist: Distributed | None = None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[float, float]:
    """(top-1, top-5) accuracy, as fractions, of `model` (in eval mode) over `loader`.

    With `dist`, counts are summed over the ranks, each of which has its own share of the
    split (`DeviceLoader(train=False, rank=..., world_size=...)`); pass the unwrapped model, not
    the DDP wrapper. The counts stay on the device until the end.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counts = torch.zeros(3, dtype=torch.float64, device=device)  # top-1 hits, top-5 hits, images
    for images, labels in loader:
        with _autocast(device, amp_dtype):
            logits = model(images)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, 5)
        hits = top == labels.view(-1, 1)
        counts[0] += hits[:, 0].sum()
        counts[1] += hits.any(dim=1).sum()
        counts[2] += labels.numel()
    model.train(was_training)
    all_reduce_sum(counts, dist)
    top1, top5, total = counts.tolist()
    if total == 0:
        raise TrainingError("evaluation saw no images")
    return top1 / total, top5 / total


# --------------------------------------------------------------------------------------
# the training loop
# --------------------------------------------------------------------------------------


def _format(epoch: int, epochs: int, m: dict[str, float]) -> str:
    return (
        f"epoch {epoch}/{epochs}  loss {m['train/loss']:.4f}  train {m['train/top1']:.3f}  "
        f"val {m['val/top1']:.3f} (ema {m['val/top1_ema']:.3f})  top5 {m['val/top5']:.3f}  "
        f"lr {m['lr']:.4g}  {m['images_per_s']:,.0f} img/s  {m['epoch_time_s']:.1f} s"
    )


@dataclass
class TrainState:
    """The live objects of one run and its optimiser step (used by `train` and the benchmark)."""

    model: nn.Module  # the raw network (its state_dict is what gets saved)
    forward: nn.Module  # `model`, wrapped in DDP and/or compiled, for the training forward pass
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    ema: EMA | None
    grad_clip: float
    amp_dtype: torch.dtype | None
    device: torch.device

    def step(self, images: torch.Tensor, labels: torch.Tensor, num_updates: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a batch; returns the detached (loss, logits). Never synchronises with the host."""
        with _autocast(self.device, self.amp_dtype):
            logits = self.forward(images)  # (B, num_classes)
        loss = self.criterion(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the fp16-scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip, foreach=True)
        self.scaler.step(self.optimizer)  # with fp16 the scaler reads its inf check on the host: its one sync
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model, num_updates)
        return loss.detach(), logits.detach()

    def checkpoint_objects(self) -> dict[str, Any]:
        """What a checkpoint holds, by `effnet.checkpoint.STATE_KEYS`."""
        return {
            "model": self.model,
            "ema": self.ema,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
        }


def make_train_state(
    spec: ModelSpec,
    cfg: TrainConfig,
    *,
    device: torch.device,
    total_steps: int,
    warmup_steps: int,
    amp_dtype: torch.dtype | None,
    dist: Distributed | None = None,
) -> TrainState:
    """Build the network (seeded by `cfg.seed`, so identical on every rank), optimiser, schedule, scaler and EMA.

    channels_last when `cfg.channels_last`; DDP when there is more than one process;
    `torch.compile` of the training forward when `cfg.compile`. Load a checkpoint into
    `.model` etc. before the first step; DDP keeps ranks equal as long as all load the same.
    """
    torch.manual_seed(cfg.seed)
    model = set_bn_momentum(build_model(spec), cfg.bn_momentum).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    forward: nn.Module = model
    if dist is not None and dist.world_size > 1:
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        forward = torch.compile(forward)
    return TrainState(
        model=model,
        forward=forward,
        criterion=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, total_steps, warmup_steps),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        ema=EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None,
        grad_clip=cfg.grad_clip,
        amp_dtype=amp_dtype,
        device=device,
    )


def make_loaders(
    spec: ModelSpec, cfg: TrainConfig, data_dir: Path, dist: Distributed
) -> tuple[DeviceLoader, DeviceLoader]:
    """The training loader (a seeded `train_per_class` subset, this rank's share) and the val loader; never test."""
    if cfg.batch_size % dist.world_size:
        raise TrainingError(
            f"train.batch_size {cfg.batch_size} does not divide over {dist.world_size} processes; "
            f"use a multiple of {dist.world_size}"
        )
    meta = load_meta(data_dir)
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    train_split, val_split = load_split(data_dir, "train"), load_split(data_dir, "val")
    subset = subset_per_class(train_split.fine_labels, cfg.train_per_class, cfg.seed)
    common = dict(
        device=dist.device,
        mean=mean,
        std=std,
        resolution=spec.resolution,
        rank=dist.rank,
        world_size=dist.world_size,
        channels_last=cfg.channels_last,
    )
    try:
        train_loader = DeviceLoader(
            train_split.images[subset],
            train_split.fine_labels[subset],
            batch_size=cfg.batch_size // dist.world_size,
            train=True,
            crop_padding=cfg.crop_padding,
            hflip=cfg.hflip,
            cutout=cfg.cutout,
            seed=cfg.seed,
            **common,
        )
        val_loader = DeviceLoader(
            val_split.images, val_split.fine_labels, batch_size=cfg.eval_batch_size, train=False, **common
        )
    except ValueError as error:
        raise TrainingError(f"{spec.name}: {error} (train.batch_size, train.train_per_class)") from None
    return train_loader, val_loader


def resume(
    state: TrainState, checkpoint_path: Path, spec: ModelSpec, cfg: TrainConfig, say: Callable[[str], None]
) -> tuple[int, list[dict[str, float]], float]:
    """Load `checkpoint_path` into `state` if it exists and was made with these settings and this code.

    Returns (finished epochs, history, train_time_s): (0, [], 0.0) for a fresh start. A
    checkpoint of other settings or code is ignored (saying which settings changed) and
    later overwritten.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint is None:
        return 0, [], 0.0
    if checkpoint.get("fingerprint") != run_fingerprint(spec, cfg):
        changes = changed_settings(checkpoint.get("settings", {}), settings(spec, cfg))
        say(
            f"{checkpoint_path}: made with other settings or code ({'; '.join(changes) or 'the code changed'}); "
            "starting afresh"
        )
        return 0, [], 0.0
    restore_checkpoint(checkpoint, state.checkpoint_objects())
    say(f"{checkpoint_path}: resuming after epoch {checkpoint['epoch']} of {cfg.epochs}")
    return checkpoint["epoch"], list(checkpoint["history"]), checkpoint["train_time_s"]


def _out_of_memory(spec: ModelSpec, cfg: TrainConfig, dist: Distributed, phase: str) -> TrainingError:
    if phase == "training":
        hint = (
            f"at train.batch_size {cfg.batch_size} ({cfg.batch_size // dist.world_size} per GPU); try a smaller "
            f"batch, e.g. -S train.batch_size={max(1, cfg.batch_size // 2)} (the learning rate scales with it)"
        )
    else:
        hint = (
            f"evaluating at train.eval_batch_size {cfg.eval_batch_size}; try "
            f"-S train.eval_batch_size={max(1, cfg.eval_batch_size // 2)}"
        )
    return TrainingError(f"CUDA out of memory training {spec.name} at {spec.resolution}x{spec.resolution} {hint}")


def progress_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between in-epoch progress lines ($EFFNET_PROGRESS_S, default PROGRESS_INTERVAL_S); None for none."""
    value = (os.environ if environ is None else environ).get(PROGRESS_ENV, "").strip()
    try:
        seconds = float(value) if value else PROGRESS_INTERVAL_S
    except ValueError:
        raise TrainingError(f"environment variable {PROGRESS_ENV} must be a number of seconds, got {value!r}") from None
    return seconds if seconds > 0 else None


def _eta(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def train_one_epoch(
    state: TrainState,
    loader: DeviceLoader,
    epoch: int,
    *,
    spec: ModelSpec,
    cfg: TrainConfig,
    dist: Distributed,
    checkpoint_path: Path,
    bar: bool,
    heartbeat: float | None = None,
) -> tuple[float, float, float]:
    """One epoch of optimiser steps; returns (mean loss, training top-1, learning rate of the last step).

    Loss and hits are summed on the device and read once, at the end. Raises TrainingError
    on a non-finite loss or a diverged one (above DIVERGENCE_FACTOR x ln(classes) for
    DIVERGENCE_STEPS consecutive steps, or for every step of a shorter epoch), naming the epoch
    (0-based here, 1-based in the message) and step. With `heartbeat` (seconds), prints a line
    with the step and the epoch's ETA to stderr at most that often (the host's clock: on a GPU
    it runs ahead of the device by the queued steps, which the next line catches up).
    """
    steps = len(loader)
    _seed_epoch(cfg.seed, epoch, dist.rank)
    loader.set_epoch(epoch)
    state.model.train()
    loss_sum = torch.zeros((), dtype=torch.float32, device=state.device)
    correct = torch.zeros((), dtype=torch.int64, device=state.device)
    first_bad = torch.full((), steps, dtype=torch.int64, device=state.device)  # `steps` means none
    # divergence: the current run of steps above the bound, and the step where such a run first got long enough
    streak = torch.zeros((), dtype=torch.int64, device=state.device)
    first_diverged = torch.full((), steps, dtype=torch.int64, device=state.device)
    need = min(DIVERGENCE_STEPS, steps)
    bound = None
    lr = 0.0
    started = last_line = time.perf_counter()
    with tqdm(
        total=steps,
        desc=f"{spec.name} epoch {epoch + 1}/{cfg.epochs}",
        leave=False,
        dynamic_ncols=True,
        disable=not bar,
    ) as progress:
        for step, (images, labels) in enumerate(loader):
            lr = state.optimizer.param_groups[0]["lr"]  # a Python float: the rate this step uses
            loss, logits = state.step(images, labels, epoch * steps + step)
            bound = DIVERGENCE_FACTOR * math.log(logits.shape[1]) if bound is None else bound
            # running sums on the device; the first non-finite step is kept with arithmetic, not a branch
            loss_sum += loss
            correct += (logits.argmax(dim=1) == labels).sum()
            bad = (~torch.isfinite(loss)).long()
            first_bad = torch.minimum(first_bad, bad * step + (1 - bad) * steps)
            streak = (streak + 1) * (loss > bound).long()  # a NaN compares False: counted by `bad`
            hit = (streak >= need).long()
            first_diverged = torch.minimum(first_diverged, hit * step + (1 - hit) * steps)
            progress.update()
            if heartbeat is not None and time.perf_counter() - last_line >= heartbeat and step + 1 < steps:
                last_line = time.perf_counter()
                per_step = (last_line - started) / (step + 1)
                print(
                    f"{spec.name} epoch {epoch + 1}/{cfg.epochs}: step {step + 1}/{steps}, {per_step:.2f} s a step, "
                    f"about {_eta(per_step * (steps - step - 1))} to the epoch's end",
                    file=sys.stderr,
                    flush=True,
                )

    stats = all_reduce_sum(torch.stack([loss_sum.double(), correct.double()]), dist)
    bad_step = int(all_reduce_min(first_bad, dist).item())
    diverged_step = int(all_reduce_min(first_diverged, dist).item())
    kept = (
        f"the last good checkpoint ({checkpoint_path}, after epoch {epoch}) is kept"
        if epoch > 0
        else "no checkpoint was written"
    )
    if bad_step < steps:
        raise TrainingError(
            f"{spec.name}: non-finite training loss at epoch {epoch + 1}, step {bad_step + 1} "
            f"of {steps}; {kept}. Try a lower train.lr, train.grad_clip > 0 or train.precision fp32"
        )
    if diverged_step < steps:
        raise TrainingError(
            f"{spec.name}: training diverged at epoch {epoch + 1}: the loss stayed above {bound:.1f} "
            f"({DIVERGENCE_FACTOR:g} x ln {logits.shape[1]}, a uniform guess's loss) for {need} steps "
            f"up to step {diverged_step + 1} of {steps}; {kept}. Try a lower train.lr"
        )
    loss_total, correct_total = stats.tolist()
    return loss_total / (steps * dist.world_size), correct_total / (steps * cfg.batch_size), float(lr)


def validate(state: TrainState, loader: DeviceLoader, dist: Distributed) -> dict[str, float]:
    """Val top-1 and top-5 of the raw and the EMA weights (the raw ones twice without an EMA)."""
    # keep every rank's BatchNorm statistics (and their EMA) equal to rank 0's, as DDP does at each forward
    broadcast_(shared_state(state.model, state.ema, state.device), dist)
    top1, top5 = evaluate_accuracy(state.model, loader, dist=dist, amp_dtype=state.amp_dtype)
    top1_ema, top5_ema = (
        evaluate_accuracy(state.ema.module, loader, dist=dist, amp_dtype=state.amp_dtype)
        if state.ema is not None
        else (top1, top5)
    )
    return {"val/top1": top1, "val/top5": top5, "val/top1_ema": top1_ema, "val/top5_ema": top5_ema}


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Make the epoch's randomness (dropout, stochastic depth) a function of (seed, epoch, rank) alone.

    A resumed run then draws exactly what an uninterrupted one draws, whatever the RNG
    states were when it stopped. (The loader has its own generators, seeded the same way.)
    """
    value = seed * 1_000_003 + epoch * 1009 + rank
    torch.manual_seed(value)  # also seeds every CUDA device
    np.random.seed(value % 2**32)
    random.seed(value)


def out_of_time(deadline: float | None, next_epoch_s: float | None, dist: Distributed) -> bool:
    """Would an epoch of `next_epoch_s` seconds, started now, end past `deadline`? The same answer on every rank."""
    if deadline is None or next_epoch_s is None:
        return False
    late = torch.tensor(float(time.time() + next_epoch_s > deadline), device=dist.device)
    return all_reduce_sum(late, dist).item() > 0


def train(
    spec: ModelSpec,
    cfg: TrainConfig,
    data_dir: Path,
    *,
    checkpoint_dir: Path,
    callback: Callback | None = None,
    dist: Distributed | None = None,
    progress: bool = True,
    cpu_bf16: bool | None = None,
    deadline: float | None = None,
) -> TrainResult:
    """Train `spec` with recipe `cfg` on the train split of `data_dir`, validating on its val split.

    The test split is never read. `cfg.train_per_class` picks a seeded stratified subset of
    the training images. Validation runs after every epoch with the raw and the EMA weights.

    Every epoch ends with `checkpoint_dir/last.pt` written (rank 0, atomically; format in
    `effnet.checkpoint`). If that file exists when training starts, the run resumes from it
    (`resume`) and skips the finished epochs; a resumed run on the CPU ends with the same
    weights, bit for bit, as an uninterrupted one. A checkpoint made with other settings or
    code is not resumed: the run starts afresh (saying which settings changed) and overwrites
    it. Resuming under another number of processes is allowed; the data order then changes,
    so the result is the same recipe but not the same bits. `train` leaves the checkpoint in
    place: call `effnet.checkpoint.remove_checkpoint` once the weights are safely saved.

    Time budget: `deadline` (seconds since the epoch; None reads `deadline_from_env()`,
    `math.inf` means none). An epoch is not started when the longest epoch measured so far
    (in this process, else the checkpoint's last) would end past it: the run then raises
    `TimeBudgetReached` (exit status 75) with every finished epoch in the checkpoint, and
    `note_resume` says so in $EFFNET_RESUME_FILE. Each process trains at least one epoch
    unless the checkpoint's timings say it cannot fit; when the deadline is the repeated
    $EFFNET_TIME_BUDGET_S (`repeated_budget`), that is a TrainingError instead (exit 1: a rerun
    could never progress): under a budget in seconds, 75 means that running again with the
    same budget moves on; under an absolute deadline, that a later deadline will.

    Progress: a tqdm bar when stderr is a terminal, else a line every `progress_interval()`
    seconds inside an epoch (DVC's logs); one line per epoch either way.

    `callback(epoch, metrics)` runs on rank 0 after each epoch (epoch counts from 1; keys:
    METRIC_KEYS, accuracies as fractions). On resume it is first called for every epoch
    already in the checkpoint, so a logger that starts afresh ends with the whole curves.

    Precision: see `autocast_dtype` (on the CPU, bf16 for the networks that train faster in it). Raises
    TrainingError on a non-finite loss (naming the epoch and step; the last good checkpoint
    is kept), on CUDA out-of-memory (naming the model and batch size), or on a batch size
    that does not fit the data or the number of processes.
    """
    dist = dist or Distributed()
    repeated = repeated_budget() if deadline is None else None
    deadline = deadline_from_env() if deadline is None else deadline
    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME
    say = print if (progress and dist.is_main) else (lambda *a, **k: None)
    if dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    train_loader, val_loader = make_loaders(spec, cfg, Path(data_dir), dist)
    steps = len(train_loader)
    state = make_train_state(
        spec,
        cfg,
        device=dist.device,
        total_steps=steps * cfg.epochs,
        warmup_steps=int(round(cfg.warmup_epochs * steps)),
        amp_dtype=autocast_dtype(cfg.precision, dist.device, cpu_bf16=cpu_bf16, arch=spec.arch),
        dist=dist,
    )
    start_epoch, history, train_time_s = resume(state, checkpoint_path, spec, cfg, say)
    if callback is not None and dist.is_main:
        for entry in history:  # replay the finished epochs, so a fresh logger gets whole curves
            callback(int(entry["epoch"]), {k: entry[k] for k in METRIC_KEYS})

    bar = progress and dist.is_main and sys.stderr.isatty()
    heartbeat = progress_interval() if progress and dist.is_main and not bar else None
    longest = history[-1]["epoch_time_s"] if history else None  # the estimate of the next epoch's time
    measured = False
    for epoch in range(start_epoch, cfg.epochs):
        if out_of_time(deadline, longest, dist):
            if epoch == start_epoch and repeated is not None:  # the same budget again would stop here again
                raise TrainingError(
                    f"{spec.name}: the time budget ({BUDGET_ENV}={repeated:g} s) is shorter than one epoch (about "
                    f"{longest:.0f} s, measured in {checkpoint_path}), so no rerun would make progress; give at least "
                    f"{BUDGET_ENV}={math.ceil(longest * 1.2)} or unset it"
                )
            where = (
                f"{checkpoint_path} holds them: run the same command again to resume"
                if epoch > start_epoch
                else f"no epoch fits before the deadline; {checkpoint_path} is kept: resume with a later deadline"
            )
            message = (
                f"{spec.name}: time budget reached after epoch {epoch} of {cfg.epochs} (the next would take "
                f"about {longest:.0f} s); {where}"
            )
            say(message)
            if dist.is_main:
                note_resume(checkpoint_path, epoch, cfg.epochs)
            raise TimeBudgetReached(message)
        start = time.perf_counter()
        phase = "training"
        try:
            loss, train_top1, lr = train_one_epoch(
                state,
                train_loader,
                epoch,
                spec=spec,
                cfg=cfg,
                dist=dist,
                checkpoint_path=checkpoint_path,
                bar=bar,
                heartbeat=heartbeat,
            )
            train_seconds = time.perf_counter() - start
            phase = "evaluation"
            val = validate(state, val_loader, dist)
        except torch.cuda.OutOfMemoryError:
            raise _out_of_memory(spec, cfg, dist, phase) from None
        epoch_seconds = time.perf_counter() - start
        train_time_s += epoch_seconds
        metrics = {
            "train/loss": loss,
            "train/top1": train_top1,
            **val,
            "lr": lr,
            "images_per_s": steps * cfg.batch_size / train_seconds,
            "epoch_time_s": epoch_seconds,
        }
        history.append({"epoch": epoch + 1, **metrics})
        if dist.is_main:
            save_checkpoint(
                checkpoint_path,
                spec,
                cfg,
                epoch=epoch + 1,
                objects=state.checkpoint_objects(),
                history=history,
                train_time_s=train_time_s,
            )
            if callback is not None:
                callback(epoch + 1, metrics)
            say(_format(epoch + 1, cfg.epochs, metrics))
        # the estimate includes the checkpoint and the logging: all of it must fit the budget
        epoch_wall = time.perf_counter() - start
        longest = epoch_wall if not measured else max(longest, epoch_wall)
        measured = True

    if not history:
        raise TrainingError(f"{spec.name}: no epoch was trained (train.epochs = {cfg.epochs})")
    state.model.eval()
    if state.ema is not None:
        state.ema.module.eval()
    return TrainResult(
        model=state.model,
        ema=state.ema.module if state.ema is not None else None,
        metrics=dict(history[-1]),
        history=history,
        train_time_s=train_time_s,
    )
