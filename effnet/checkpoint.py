"""The trainer's two file formats: the resumable checkpoint and the weights file of a trained network.

- The checkpoint, `<checkpoint_dir>/last.pt`, written at the end of every epoch: model,
  EMA, optimiser, schedule, gradient scaler, RNG states, the history so far, and a
  fingerprint of the settings and the trainer's code (a checkpoint resumes only if both
  match). It is always read onto the CPU: `load_state_dict` then copies each tensor to the
  device of what it is loaded into, and the RNG states stay CPU tensors (read onto a GPU,
  the numpy key would be a CUDA tensor that `.numpy()` refuses).
- The weights file, `model.pt`, for the evaluate and cam stages: the spec, raw and EMA
  weights (on the CPU), the metrics and history, the recipe.

Both are written atomically (`effnet.io.write_atomic`): a killed writer leaves the previous
file, never half of a new one.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
from torch import nn

from effnet.config import TrainConfig
from effnet.fingerprint import fingerprint
from effnet.io import write_atomic
from effnet.models import ModelSpec, build_model

if TYPE_CHECKING:
    from effnet.train import TrainResult

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = 1
TRAINER = Path(__file__).with_name("train.py")  # the code whose fingerprint a checkpoint records (it imports this module)
# The objects whose state a checkpoint holds, by key; "ema" may be None (train.ema_decay = 0).
STATE_KEYS = ("model", "ema", "optimizer", "scheduler", "scaler")


# --------------------------------------------------------------------------------------
# settings and fingerprint
# --------------------------------------------------------------------------------------


def settings(spec: ModelSpec, cfg: TrainConfig) -> dict[str, Any]:
    """Everything that decides a run's result: the network and the recipe."""
    return {"spec": spec.to_dict(), "train": dataclasses.asdict(cfg)}


def run_fingerprint(spec: ModelSpec, cfg: TrainConfig) -> str:
    """The settings and the trainer's code (effnet/train.py and what it imports): a checkpoint resumes only if both match."""
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
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore `rng_states()`; CUDA states only when as many devices are visible as were saved."""
    torch.set_rng_state(states["torch"].cpu())
    if torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["key"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


# --------------------------------------------------------------------------------------
# the checkpoint
# --------------------------------------------------------------------------------------


def save_checkpoint(path: Path, spec: ModelSpec, cfg: TrainConfig, *, epoch: int, objects: Mapping[str, Any],
                    history: list[dict[str, float]], train_time_s: float) -> None:
    """Write the state after `epoch` finished epochs (atomically); `objects` maps STATE_KEYS to objects with `state_dict`."""
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


class DamagedFileError(ValueError):
    """A checkpoint or weights file exists but cannot be read (cut short, overwritten). The message names it and the fix."""


def _read(path: Path, fix: str) -> dict[str, Any]:
    """torch.load of `path` onto the CPU; a file that does not load is a DamagedFileError saying `fix`."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- torch reports a cut file as RuntimeError, EOFError, UnpicklingError ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DamagedFileError(f"{path}: damaged, cannot be read ({reason[:120]}; {path.stat().st_size:,} bytes); "
                               f"{fix}") from None
    if not isinstance(payload, dict):
        raise DamagedFileError(f"{path}: not a file of this project (a {type(payload).__name__}); {fix}")
    return payload


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at `path` read onto the CPU, or None when there is none; DamagedFileError if it does not load."""
    path = Path(path)
    if not path.is_file():
        return None
    return _read(path, f"delete it (rm {path}) and rerun: the run starts afresh, as it would without it")


def restore_checkpoint(checkpoint: dict[str, Any], objects: Mapping[str, Any]) -> None:
    """Load every state of `checkpoint` into `objects` (as given to `save_checkpoint`) and restore the RNGs."""
    for key in STATE_KEYS:
        if objects[key] is not None:
            objects[key].load_state_dict(checkpoint[key])
    set_rng_states(checkpoint["rng"])


def remove_checkpoint(checkpoint_dir: Path) -> None:
    """Delete a run's checkpoint directory; the caller does this once the weights are saved."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------
# the weights file
# --------------------------------------------------------------------------------------

WEIGHT_KEYS = ("spec", "state_dict", "ema_state_dict", "metrics", "history", "train_time_s", "train_config")


def save_weights(path: Path, result: "TrainResult", spec: ModelSpec, cfg: TrainConfig,
                 extra: dict[str, Any] | None = None) -> None:
    """Write the trained network to `path` (atomically), for the evaluate and cam stages.

    Keys: spec (ModelSpec.to_dict), state_dict (raw weights), ema_state_dict (or None),
    metrics, history, train_time_s, train_config (TrainConfig as a dict), plus the stage's
    `extra` entries (e.g. the scaling study's "matched" record). Every tensor is moved to the
    CPU, so the file loads anywhere with `torch.load(..., weights_only=True)`.
    """
    def cpu(module: nn.Module | None) -> dict[str, torch.Tensor] | None:
        return None if module is None else {k: v.detach().cpu() for k, v in module.state_dict().items()}

    payload = {
        "spec": spec.to_dict(),
        "state_dict": cpu(result.model),
        "ema_state_dict": cpu(result.ema),
        "metrics": dict(result.metrics),
        "history": [dict(h) for h in result.history],
        "train_time_s": float(result.train_time_s),
        "train_config": dataclasses.asdict(cfg),
        **{k: v for k, v in (extra or {}).items() if k not in WEIGHT_KEYS},
    }
    write_atomic(Path(path), lambda tmp: torch.save(payload, tmp))


def read_weights(path: Path) -> dict[str, Any]:
    """The raw contents of a `save_weights` file (tensors on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file; train the model first (the train stage)")
    return _read(path, f"train the model again: delete it (rm {path}) and run dvc repro, which re-runs its training stage")


def load_weights(path: Path, *, ema: bool = True, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the network of a `save_weights` file, in eval mode on `device`.

    Loads the EMA weights when the file has them and `ema` is true, else the raw weights.
    The model carries `.spec` and `.resolution` (see `effnet.models.build_model`).
    """
    payload = read_weights(path)
    # weights files older than ModelSpec.drop_path_rate kept the rate in their recipe
    spec = ModelSpec.from_dict({"drop_path_rate": payload.get("train_config", {}).get("drop_path_rate", 0.2), **payload["spec"]})
    model = build_model(spec)
    state = payload["ema_state_dict"] if ema and payload.get("ema_state_dict") is not None else payload["state_dict"]
    model.load_state_dict(state)
    return model.to(device).eval()
