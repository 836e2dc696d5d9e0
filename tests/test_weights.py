"""effnet/weights.py: the weights file round-trips the raw and EMA networks, its keys, and refuses a missing file."""

from __future__ import annotations

import pytest
import torch

from effnet.config import TrainConfig
from effnet.models import ModelSpec, build_model
from effnet.weights import WEIGHT_KEYS, load_weights, read_weights, save_weights

TINY = ModelSpec(name="tiny", arch="efficientnet", resolution=16, width=0.25, depth=0.34, dropout=0.1)
CFG = TrainConfig(epochs=2, batch_size=25)


def networks(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two independently initialised copies of TINY: the 'raw' and the 'EMA' network."""
    torch.manual_seed(seed)
    return build_model(TINY), build_model(TINY)


def equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_raw_and_ema_weights_round_trip_with_the_recipe_and_extra_entries(tmp_path):
    raw, ema = networks()
    path = tmp_path / "models" / "model.pt"
    history = [{"epoch": 1, "val/top1": 0.1}, {"epoch": 2, "val/top1": 0.2}]
    save_weights(
        path,
        TINY,
        CFG,
        model=raw,
        ema=ema,
        metrics=history[-1],
        history=history,
        train_time_s=12.5,
        extra={"matched": {"flops_ratio": 2.0}, "spec": "must not overwrite"},
    )
    payload = read_weights(path)
    assert set(payload) == set(WEIGHT_KEYS) | {"matched"}
    assert payload["spec"] == TINY.to_dict() and payload["train_config"]["batch_size"] == 25
    assert payload["metrics"] == {"epoch": 2, "val/top1": 0.2} and payload["history"] == history
    assert payload["train_time_s"] == 12.5 and payload["matched"] == {"flops_ratio": 2.0}
    assert not equal(raw.state_dict(), ema.state_dict())
    assert equal(load_weights(path).state_dict(), ema.state_dict())  # EMA by default
    assert equal(load_weights(path, ema=False).state_dict(), raw.state_dict())
    model = load_weights(path)
    assert not model.training and model.spec == TINY


def test_without_ema_the_raw_weights_load(tmp_path):
    raw, _ = networks(1)
    save_weights(tmp_path / "model.pt", TINY, CFG, model=raw, ema=None, metrics={"epoch": 1})
    assert read_weights(tmp_path / "model.pt")["ema_state_dict"] is None
    assert equal(load_weights(tmp_path / "model.pt").state_dict(), raw.state_dict())


def test_a_missing_file_says_to_train_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="train the model first"):
        read_weights(tmp_path / "none.pt")
