"""The trainer's resumable checkpoint, `<checkpoint_dir>/last.pt`; used by `effnet.train` alone.

Written at the end of every epoch: model, EMA, optimiser, schedule, gradient scaler, RNG
states, the history so far, and a fingerprint of the settings and the trainer's code (a
checkpoint resumes only if both match). It is always read onto the CPU: `load_state_dict`
then copies each tensor to the device of what it is loaded into, and the RNG states stay
CPU tensors (read onto a GPU, the numpy key would be a CUDA tensor that `.numpy()` refuses).
Written atomically (`effnet.io.write_atomic`): a killed writer leaves the previous file,
never half of a new one. The weights file of a trained network is `effnet.weights`.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effnet.config import TrainConfig
from effnet.fingerprint import fingerprint
from effnet.io import read_torch_file, write_atomic
from effnet.models import ModelSpec

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = 1
TRAINER = Path(__file__).with_name("train.py")  # the code whose fingerprint a checkpoint records
# The objects whose state a checkpoint holds, by key; "ema" may be None (train.ema_decay = 0).
STATE_KEYS = ("model", "ema", "optimizer", "scheduler", "scaler")


# --------------------------------------------------------------------------------------
# settings and fingerprint
# --------------------------------------------------------------------------------------


def settings(spec: ModelSpec, cfg: TrainConfig) -> dict[str, Any]:
    """Everything that decides a run's result: the network and the recipe."""
    return {"spec": spec.to_dict(), "train": dataclasses.asdict(cfg)}


def run_fingerprint(spec: ModelSpec, cfg: TrainConfig) -> str:
    """The settings and the trainer's code (effnet/train.py and its imports): a checkpoint resumes if both match."""
    return fingerprint(settings(spec, cfg), code=[TRAINER])


def changed_settings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'train.lr: 0.1 -> 0.2' for every setting that differs."""
    changes = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                changes.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return changes


# --------------------------------------------------------------------------------------
# random number generators
# --------------------------------------------------------------------------------------


def rng_states() -> dict[str, Any]:
    """The torch, CUDA, numpy and Python RNG states, as tensors and plain values (`weights_only` loads them)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore `rng_states()`; CUDA states only when as many devices are visible as were saved."""
    torch.set_rng_state(states["torch"].cpu())
    if torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])
    n = states["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


# --------------------------------------------------------------------------------------
# the checkpoint
# --------------------------------------------------------------------------------------


def save_checkpoint(
    path: Path,
    spec: ModelSpec,
    cfg: TrainConfig,
    *,
    epoch: int,
    objects: Mapping[str, Any],
    history: list[dict[str, float]],
    train_time_s: float,
) -> None:
    """Write the state after `epoch` finished epochs, atomically; `objects` maps STATE_KEYS to `state_dict` holders."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": run_fingerprint(spec, cfg),
        "settings": settings(spec, cfg),
        "epoch": epoch,
        **{key: None if objects[key] is None else objects[key].state_dict() for key in STATE_KEYS},
        "rng": rng_states(),
        "history": history,
        "train_time_s": train_time_s,
    }
    write_atomic(Path(path), lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at `path` read onto the CPU, or None when there is none; DamagedFileError if it does not load."""
    path = Path(path)
    if not path.is_file():
        return None
    return read_torch_file(path, f"delete it (rm {path}) and rerun: the run starts afresh, as it would without it")


def restore_checkpoint(checkpoint: dict[str, Any], objects: Mapping[str, Any]) -> None:
    """Load every state of `checkpoint` into `objects` (as given to `save_checkpoint`) and restore the RNGs."""
    for key in STATE_KEYS:
        if objects[key] is not None:
            objects[key].load_state_dict(checkpoint[key])
    set_rng_states(checkpoint["rng"])


def remove_checkpoint(checkpoint_dir: Path) -> None:
    """Delete a run's checkpoint directory; the caller does this once the weights are saved."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)


def shrink_checkpoint(path: Path, target: Path, dtype: torch.dtype = torch.bfloat16) -> int:
    """Write `path`'s checkpoint to `target` with every floating tensor in `dtype`; returns the bytes written.

    For a checkpoint that must travel between GPU leases (docs/lease.md): in bf16 the
    weights, the EMA and the optimiser's momentum take 2 bytes per value instead of 4, about
    6 bytes per parameter instead of 12. Integer tensors (BatchNorm counters, RNG states) and
    everything else are kept exactly. `resume` loads it as it is: `load_state_dict` casts each
    tensor back to the dtype of what it is loaded into. The state is then rounded once, so the
    resumed run is not bit-for-bit the uninterrupted one; say so beside its result.
    """

    def cast(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(dtype) if value.is_floating_point() else value
        if isinstance(value, dict):
            return {k: cast(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(cast(v) for v in value)
        return value

    checkpoint = load_checkpoint(path)
    if checkpoint is None:
        raise FileNotFoundError(f"{path}: no such checkpoint; train with a deadline first (it writes one per epoch)")
    small = {key: cast(value) if key in STATE_KEYS else value for key, value in checkpoint.items()}
    write_atomic(Path(target), lambda tmp: torch.save(small, tmp))
    return Path(target).stat().st_size
