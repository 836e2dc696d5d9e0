"""Training one network on CIFAR-100: the recipe, mixed precision, DDP, checkpoints, the weights file.

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
checkpoint at the end of every epoch from which an interrupted run resumes and, on the CPU,
finishes bit for bit as if it had never stopped.

This module imports torch, numpy and `effnet` only: it takes a logging callback rather than
knowing about DVCLive, so it runs on a bare GPU machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from effnet.config import TrainConfig
from effnet.data import DeviceLoader, load_meta, load_split, subset_per_class
from effnet.fingerprint import fingerprint
from effnet.distributed import Distributed, all_reduce_min, all_reduce_sum, broadcast_
from effnet.models import ModelSpec, build_model, set_bn_momentum

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = 1
METRIC_KEYS = ("train/loss", "train/top1", "val/top1", "val/top5", "val/top1_ema", "val/top5_ema",
               "lr", "images_per_s", "epoch_time_s")  # accuracies are fractions in [0, 1]

Callback = Callable[[int, dict[str, float]], None]


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, out of memory, unusable settings). The message says why."""


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
    early steps, and a lower `train.lr` than the paper's 0.256 per 256 images may be needed.
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


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
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
        self._pairs: tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        """Move the average towards `model` (the raw, unwrapped network) after update `num_updates`."""
        if self._pairs is None:
            averaged, current, integer = [], [], []
            for a, m in zip(itertools.chain(self.module.parameters(), self.module.buffers()),
                            itertools.chain(model.parameters(), model.buffers()), strict=True):
                if a.is_floating_point():
                    averaged.append(a.detach())
                    current.append(m.detach())
                else:
                    integer.append((a, m))
            self._pairs = (averaged, current, integer)
        averaged, current, integer = self._pairs
        decay = min(self.decay, (1 + num_updates) / (10 + num_updates))
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
        for a, m in integer:
            a.copy_(m)
        self.n_averaged += 1


def shared_state(model: nn.Module, ema: EMA | None, device: torch.device) -> list[torch.Tensor]:
    """The tensors that every rank must hold equal besides the parameters: BatchNorm buffers and the EMA.

    Only those on the training device: the EMA's update counter (`n_averaged`) stays on the
    CPU, which NCCL cannot broadcast.
    """
    tensors = list(model.buffers()) + (list(ema.state_dict().values()) if ema is not None else [])
    return [t for t in tensors if t.device == device]


def autocast_dtype(precision: str, device: torch.device, *, cpu_bf16: bool = False) -> torch.dtype | None:
    """The autocast dtype of `train.precision` on `device`, or None for fp32.

    On CUDA `bf16` and `fp16` autocast as asked. On the CPU training runs in fp32 whatever
    `train.precision` says (params.yaml's bf16 is meant for GPUs, and CPUs without native
    bf16 run it slower than fp32), unless the caller passes `cpu_bf16=True`, which runs CPU
    bf16 autocast when `train.precision` is bf16.
    """
    if device.type == "cuda":
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if precision == "bf16" and cpu_bf16:
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                      dist: Distributed | None = None, amp_dtype: torch.dtype | None = None) -> tuple[float, float]:
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
# checkpoints and weights files
# --------------------------------------------------------------------------------------


def settings(spec: ModelSpec, cfg: TrainConfig) -> dict[str, Any]:
    """Everything that decides a run's result: the network and the recipe."""
    return {"spec": spec.to_dict(), "train": dataclasses.asdict(cfg)}


def run_fingerprint(spec: ModelSpec, cfg: TrainConfig) -> str:
    """The settings and the trainer's code (this module and what it imports): a checkpoint resumes only if both match."""
    return fingerprint(settings(spec, cfg), code=[Path(__file__)])


def _changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'train.lr: 0.1 -> 0.2' for every setting that differs."""
    changes = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                changes.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return changes


def _save_atomic(payload: Any, path: Path) -> None:
    """torch.save to a temporary file in the same directory, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _rng_states() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"].cpu())
    if torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Make the epoch's randomness (dropout, stochastic depth) a function of (seed, epoch, rank) alone.

    A resumed run then draws exactly what an uninterrupted one draws, whatever the RNG
    states were when it stopped. (The loader has its own generators, seeded the same way.)
    """
    value = seed * 1_000_003 + epoch * 1009 + rank
    torch.manual_seed(value)  # also seeds every CUDA device
    np.random.seed(value % 2**32)
    random.seed(value)


def remove_checkpoint(checkpoint_dir: Path) -> None:
    """Delete a run's checkpoint directory; the caller does this once the weights are saved."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)


_WEIGHT_KEYS = ("spec", "state_dict", "ema_state_dict", "metrics", "history", "train_time_s", "train_config")


def save_weights(path: Path, result: TrainResult, spec: ModelSpec, cfg: TrainConfig,
                 extra: dict[str, Any] | None = None) -> None:
    """Write the trained network to `path` (atomically), for the evaluate and cam stages.

    Keys: spec (ModelSpec.to_dict), state_dict (raw weights), ema_state_dict (or None),
    metrics, history, train_time_s, train_config (TrainConfig as a dict), plus the stage's
    `extra` entries (e.g. the scaling study's "matched" record). Every tensor is moved to the
    CPU, so the file loads anywhere with `torch.load(..., weights_only=True)`.
    """
    def cpu(module: nn.Module | None) -> dict[str, torch.Tensor] | None:
        return None if module is None else {k: v.detach().cpu() for k, v in module.state_dict().items()}

    _save_atomic({
        "spec": spec.to_dict(),
        "state_dict": cpu(result.model),
        "ema_state_dict": cpu(result.ema),
        "metrics": dict(result.metrics),
        "history": [dict(h) for h in result.history],
        "train_time_s": float(result.train_time_s),
        "train_config": dataclasses.asdict(cfg),
        **{k: v for k, v in (extra or {}).items() if k not in _WEIGHT_KEYS},
    }, Path(path))


def read_weights(path: Path) -> dict[str, Any]:
    """The raw contents of a `save_weights` file (tensors on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file; train the model first (the train stage)")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_weights(path: Path, *, ema: bool = True, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the network of a `save_weights` file, in eval mode on `device`.

    Loads the EMA weights when the file has them and `ema` is true, else the raw weights.
    The model carries `.spec` and `.resolution` (see `effnet.models.build_model`).
    """
    payload = read_weights(path)
    spec = ModelSpec.from_dict(payload["spec"])
    drop_path_rate = payload.get("train_config", {}).get("drop_path_rate", 0.2)
    model = build_model(spec, drop_path_rate=drop_path_rate)
    state = payload["ema_state_dict"] if ema and payload.get("ema_state_dict") is not None else payload["state_dict"]
    model.load_state_dict(state)
    return model.to(device).eval()


# --------------------------------------------------------------------------------------
# the training loop
# --------------------------------------------------------------------------------------


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _progress_bar(total: int, description: str, enabled: bool):
    """A tqdm bar on a terminal; a silent stand-in elsewhere (tqdm is optional on the GPU machine)."""
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True)
        except ImportError:
            pass
    return _NoBar()


def _format(epoch: int, epochs: int, m: dict[str, float]) -> str:
    return (f"epoch {epoch}/{epochs}  loss {m['train/loss']:.4f}  train {m['train/top1']:.3f}  "
            f"val {m['val/top1']:.3f} (ema {m['val/top1_ema']:.3f})  top5 {m['val/top5']:.3f}  "
            f"lr {m['lr']:.4g}  {m['images_per_s']:,.0f} img/s  {m['epoch_time_s']:.1f} s")


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


def make_train_state(spec: ModelSpec, cfg: TrainConfig, *, device: torch.device, total_steps: int, warmup_steps: int,
                     amp_dtype: torch.dtype | None, dist: Distributed | None = None) -> TrainState:
    """Build the network (seeded by `cfg.seed`, so identical on every rank), optimiser, schedule, scaler and EMA.

    channels_last when `cfg.channels_last`; DDP when there is more than one process;
    `torch.compile` of the training forward when `cfg.compile`. Load a checkpoint into
    `.model` etc. before the first step; DDP keeps ranks equal as long as all load the same.
    """
    torch.manual_seed(cfg.seed)
    model = set_bn_momentum(build_model(spec, drop_path_rate=cfg.drop_path_rate), cfg.bn_momentum).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    forward: nn.Module = model
    if dist is not None and dist.world_size > 1:
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        forward = torch.compile(forward)
    return TrainState(
        model=model, forward=forward, criterion=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        optimizer=optimizer, scheduler=make_scheduler(optimizer, total_steps, warmup_steps),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        ema=EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None, grad_clip=cfg.grad_clip, amp_dtype=amp_dtype,
        device=device)


def train(spec: ModelSpec, cfg: TrainConfig, data_dir: Path, *, checkpoint_dir: Path, callback: Callback | None = None,
          dist: Distributed | None = None, progress: bool = True, cpu_bf16: bool = False) -> TrainResult:
    """Train `spec` with recipe `cfg` on the train split of `data_dir`, validating on its val split.

    The test split is never read. `cfg.train_per_class` picks a seeded stratified subset of
    the training images. Validation runs after every epoch with the raw and the EMA weights.

    Every epoch ends with `checkpoint_dir/last.pt` written (rank 0, atomically). If that file
    exists when training starts, the run resumes from it (every rank loads it) and skips the
    finished epochs; a resumed run on the CPU ends with the same weights, bit for bit, as an
    uninterrupted one. The checkpoint records a fingerprint of (spec, cfg): a checkpoint made
    with other settings is not resumed, the run starts afresh (saying which settings
    changed) and overwrites it. Resuming under another number of processes is allowed; the
    data order then changes, so the result is the same recipe but not the same bits.
    `train` leaves the checkpoint in place: call `remove_checkpoint` once the weights are
    safely saved.

    `callback(epoch, metrics)` runs on rank 0 after each epoch (epoch counts from 1; keys:
    METRIC_KEYS, accuracies as fractions). On resume it is first called for every epoch
    already in the checkpoint, so a logger that starts afresh ends with the whole curves.

    Precision: see `autocast_dtype` (on the CPU fp32 unless `cpu_bf16`). Raises
    TrainingError on a non-finite loss (naming the epoch and step; the last good checkpoint
    is kept), on CUDA out-of-memory (naming the model and batch size), or on a batch size
    that does not fit the data or the number of processes.
    """
    dist = dist or Distributed()
    device = dist.device
    data_dir, checkpoint_dir = Path(data_dir), Path(checkpoint_dir)
    checkpoint_path = checkpoint_dir / CHECKPOINT_NAME
    say = print if (progress and dist.is_main) else (lambda *a, **k: None)

    if cfg.batch_size % dist.world_size:
        raise TrainingError(f"train.batch_size {cfg.batch_size} does not divide over {dist.world_size} processes; "
                            f"use a multiple of {dist.world_size}")
    batch_per_rank = cfg.batch_size // dist.world_size
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp_dtype = autocast_dtype(cfg.precision, device, cpu_bf16=cpu_bf16)

    # data: train and val only; the test split is for the evaluate stage
    meta = load_meta(data_dir)
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    train_split, val_split = load_split(data_dir, "train"), load_split(data_dir, "val")
    subset = subset_per_class(train_split.fine_labels, cfg.train_per_class, cfg.seed)
    try:
        train_loader = DeviceLoader(train_split.images[subset], train_split.fine_labels[subset], batch_size=batch_per_rank,
                                    train=True, device=device, mean=mean, std=std, resolution=spec.resolution,
                                    crop_padding=cfg.crop_padding, hflip=cfg.hflip, cutout=cfg.cutout, seed=cfg.seed,
                                    rank=dist.rank, world_size=dist.world_size, channels_last=cfg.channels_last)
        val_loader = DeviceLoader(val_split.images, val_split.fine_labels, batch_size=cfg.eval_batch_size, train=False,
                                  device=device, mean=mean, std=std, resolution=spec.resolution, rank=dist.rank,
                                  world_size=dist.world_size, channels_last=cfg.channels_last)
    except ValueError as error:
        raise TrainingError(f"{spec.name}: {error} (train.batch_size, train.train_per_class)") from None
    steps = len(train_loader)
    total_steps = steps * cfg.epochs
    warmup_steps = int(round(cfg.warmup_epochs * steps))

    state = make_train_state(spec, cfg, device=device, total_steps=total_steps, warmup_steps=warmup_steps,
                             amp_dtype=amp_dtype, dist=dist)
    model, optimizer, scheduler, scaler, ema = state.model, state.optimizer, state.scheduler, state.scaler, state.ema

    # resume
    start_epoch, history, train_time_s = 0, [], 0.0
    if checkpoint_path.is_file():
        # on the CPU: RNG states must stay CPU tensors (map_location=cuda would make `.numpy()` fail);
        # load_state_dict then copies every tensor to the device of what it loads into
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if checkpoint.get("fingerprint") != run_fingerprint(spec, cfg):
            changes = _changed(checkpoint.get("settings", {}), settings(spec, cfg))
            say(f"{checkpoint_path}: made with other settings or code ({'; '.join(changes) or 'the code changed'}); "
                "starting afresh")
        else:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            scaler.load_state_dict(checkpoint["scaler"])
            if ema is not None:
                ema.load_state_dict(checkpoint["ema"])
            _set_rng_states(checkpoint["rng"])
            start_epoch, history = checkpoint["epoch"], list(checkpoint["history"])
            train_time_s = checkpoint["train_time_s"]
            say(f"{checkpoint_path}: resuming after epoch {start_epoch} of {cfg.epochs}")
            if callback is not None and dist.is_main:
                for entry in history:
                    callback(int(entry["epoch"]), {k: entry[k] for k in METRIC_KEYS})
        del checkpoint

    bar_enabled = progress and dist.is_main and sys.stderr.isatty()
    phase = "training"
    try:
        for epoch in range(start_epoch, cfg.epochs):
            _seed_epoch(cfg.seed, epoch, dist.rank)
            train_loader.set_epoch(epoch)
            model.train()
            loss_sum = torch.zeros((), dtype=torch.float32, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            first_bad = torch.full((), steps, dtype=torch.int64, device=device)  # `steps` means none
            phase, lr = "training", 0.0
            start = time.perf_counter()
            with _progress_bar(steps, f"{spec.name} epoch {epoch + 1}/{cfg.epochs}", bar_enabled) as bar:
                for step, (images, labels) in enumerate(train_loader):
                    lr = optimizer.param_groups[0]["lr"]  # a Python float: the rate this step uses
                    loss, logits = state.step(images, labels, epoch * steps + step)
                    # running sums on the device; the first non-finite step is kept with arithmetic, not a branch
                    loss_sum += loss
                    correct += (logits.argmax(dim=1) == labels).sum()
                    bad = (~torch.isfinite(loss)).long()
                    first_bad = torch.minimum(first_bad, bad * step + (1 - bad) * steps)
                    bar.update()

            # the epoch's one look at the training numbers
            stats = all_reduce_sum(torch.stack([loss_sum.double(), correct.double()]), dist)
            bad_step = int(all_reduce_min(first_bad, dist).item())
            if bad_step < steps:
                kept = (f"the last good checkpoint ({checkpoint_path}, after epoch {epoch}) is kept" if epoch > 0
                        else "no checkpoint was written")
                raise TrainingError(f"{spec.name}: non-finite training loss at epoch {epoch + 1}, step {bad_step + 1} "
                                    f"of {steps}; {kept}. Try a lower train.lr, train.grad_clip > 0 or train.precision fp32")
            train_seconds = time.perf_counter() - start
            loss_total, correct_total = stats.tolist()

            # keep every rank's BatchNorm statistics (and their EMA) equal to rank 0's, as DDP does at each forward
            broadcast_(shared_state(model, ema, device), dist)

            phase = "evaluation"
            top1, top5 = evaluate_accuracy(model, val_loader, dist=dist, amp_dtype=amp_dtype)
            top1_ema, top5_ema = (evaluate_accuracy(ema.module, val_loader, dist=dist, amp_dtype=amp_dtype)
                                  if ema is not None else (top1, top5))
            epoch_seconds = time.perf_counter() - start
            train_time_s += epoch_seconds
            metrics = {
                "train/loss": loss_total / (steps * dist.world_size),
                "train/top1": correct_total / (steps * cfg.batch_size),
                "val/top1": top1, "val/top5": top5, "val/top1_ema": top1_ema, "val/top5_ema": top5_ema,
                "lr": float(lr),
                "images_per_s": steps * cfg.batch_size / train_seconds,
                "epoch_time_s": epoch_seconds,
            }
            history.append({"epoch": epoch + 1, **metrics})

            if dist.is_main:
                _save_atomic({
                    "format": CHECKPOINT_FORMAT,
                    "fingerprint": run_fingerprint(spec, cfg),
                    "settings": settings(spec, cfg),
                    "epoch": epoch + 1,  # finished epochs
                    "model": model.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": _rng_states(),
                    "history": history,
                    "train_time_s": train_time_s,
                }, checkpoint_path)
                if callback is not None:
                    callback(epoch + 1, metrics)
                say(_format(epoch + 1, cfg.epochs, metrics))
    except torch.cuda.OutOfMemoryError:
        if phase == "training":
            hint = (f"at train.batch_size {cfg.batch_size} ({batch_per_rank} per GPU); try a smaller batch, "
                    f"e.g. -S train.batch_size={max(1, cfg.batch_size // 2)} (the learning rate scales with it)")
        else:
            hint = (f"evaluating at train.eval_batch_size {cfg.eval_batch_size}; try "
                    f"-S train.eval_batch_size={max(1, cfg.eval_batch_size // 2)}")
        raise TrainingError(f"CUDA out of memory training {spec.name} at {spec.resolution}x{spec.resolution} {hint}") from None

    if not history:
        raise TrainingError(f"{spec.name}: no epoch was trained (train.epochs = {cfg.epochs})")
    model.eval()
    if ema is not None:
        ema.module.eval()
    return TrainResult(model=model, ema=ema.module if ema is not None else None, metrics=dict(history[-1]),
                       history=history, train_time_s=train_time_s)
