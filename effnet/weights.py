"""The weights file of a trained network, `model.pt`: written by the training stages, read by evaluate and cam.

Keys: spec (`ModelSpec.to_dict`), state_dict (raw weights), ema_state_dict (or None),
metrics (the last epoch's), history (one entry per epoch), train_time_s, train_config
(`TrainConfig` as a dict), plus a stage's extra entries (e.g. the scaling study's
"matched" record). Every tensor is on the CPU, so the file loads anywhere with
`torch.load(..., weights_only=True)`; it is written atomically (`effnet.io.write_atomic`).

Knows nothing of the trainer: it takes the networks and their metrics, so that reading a
weights file does not import the training code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet.config import TrainConfig
from effnet.io import read_torch_file, write_atomic
from effnet.models import ModelSpec, build_model

WEIGHT_KEYS = ("spec", "state_dict", "ema_state_dict", "metrics", "history", "train_time_s", "train_config")


def _cpu_state(module: nn.Module | None) -> dict[str, torch.Tensor] | None:
    return None if module is None else {k: v.detach().cpu() for k, v in module.state_dict().items()}


def save_weights(
    path: Path,
    spec: ModelSpec,
    cfg: TrainConfig,
    *,
    model: nn.Module,
    ema: nn.Module | None,
    metrics: Mapping[str, float],
    history: Sequence[Mapping[str, float]] = (),
    train_time_s: float = 0.0,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write `model` (and its EMA, if any) trained as `spec` with `cfg` to `path`, atomically.

    `extra` entries are added to the file, except those that would overwrite one of WEIGHT_KEYS.
    """
    payload = {
        "spec": spec.to_dict(),
        "state_dict": _cpu_state(model),
        "ema_state_dict": _cpu_state(ema),
        "metrics": dict(metrics),
        "history": [dict(h) for h in history],
        "train_time_s": float(train_time_s),
        "train_config": dataclasses.asdict(cfg),
        **{k: v for k, v in (extra or {}).items() if k not in WEIGHT_KEYS},
    }
    write_atomic(Path(path), lambda tmp: torch.save(payload, tmp))


def read_weights(path: Path) -> dict[str, Any]:
    """The raw contents of a `save_weights` file (tensors on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file; train the model first (the train stage)")
    return read_torch_file(
        path, f"train the model again: delete it (rm {path}) and run dvc repro, which re-runs its training stage"
    )


def load_weights(path: Path, *, ema: bool = True, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the network of a `save_weights` file, in eval mode on `device`.

    Loads the EMA weights when the file has them and `ema` is true, else the raw weights.
    The model carries `.spec` and `.resolution` (see `effnet.models.build_model`).
    """
    payload = read_weights(path)
    # files written before ModelSpec had drop_path_rate keep the rate in their recipe only
    recipe_rate = payload.get("train_config", {}).get("drop_path_rate", 0.2)
    spec = ModelSpec.from_dict({"drop_path_rate": recipe_rate, **payload["spec"]})
    model = build_model(spec)
    state = payload["ema_state_dict"] if ema and payload.get("ema_state_dict") is not None else payload["state_dict"]
    model.load_state_dict(state)
    return model.to(device).eval()
