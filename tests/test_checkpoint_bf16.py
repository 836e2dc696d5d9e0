"""A checkpoint shrunk to bf16 for the trip between leases: half the bytes, integers exact, and it resumes."""

from __future__ import annotations

import time

import pytest
import torch

import effnet.train as train_module
from effnet.checkpoint import CHECKPOINT_NAME, STATE_KEYS, load_checkpoint, shrink_checkpoint
from effnet.config import TrainConfig
from effnet.models import ModelSpec
from effnet.train import train

TINY = ModelSpec(name="tiny", arch="efficientnet", resolution=16, width=0.25, depth=0.34, dropout=0.1)
QUICK = TrainConfig(
    epochs=2,
    train_per_class=1,
    batch_size=25,
    lr=0.4,
    warmup_epochs=0.5,
    precision="fp32",
    eval_batch_size=100,
    ema_decay=0.9,
)


def tensors(value, prefix=""):
    """(path, tensor) for every tensor inside nested dicts and lists."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from tensors(v, f"{prefix}/{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from tensors(v, f"{prefix}/{i}")


def test_a_bf16_checkpoint_is_half_the_size_keeps_integers_and_resumes(prepared_data_dir, tmp_path):
    stopped = tmp_path / "stopped"
    with pytest.raises(train_module.TimeBudgetReached, match="after epoch 1 of 2"):
        train(TINY, QUICK, prepared_data_dir, checkpoint_dir=stopped, progress=False, deadline=time.time() + 1e-3)
    full_path, small_path = stopped / CHECKPOINT_NAME, tmp_path / "small" / CHECKPOINT_NAME
    size = shrink_checkpoint(full_path, small_path)
    assert size == small_path.stat().st_size and size < 0.6 * full_path.stat().st_size

    full, small = load_checkpoint(full_path), load_checkpoint(small_path)
    assert full.keys() == small.keys()
    assert {k: full[k] for k in full if k not in STATE_KEYS and k != "rng"} == {
        k: small[k] for k in small if k not in STATE_KEYS and k != "rng"
    }
    pairs = dict(tensors({k: full[k] for k in (*STATE_KEYS, "rng")}))
    shrunk = dict(tensors({k: small[k] for k in (*STATE_KEYS, "rng")}))
    assert pairs.keys() == shrunk.keys()
    floats = 0
    for key, value in pairs.items():
        if value.is_floating_point():
            floats += 1
            assert shrunk[key].dtype == torch.bfloat16 and torch.equal(shrunk[key], value.to(torch.bfloat16)), key
        else:
            assert shrunk[key].dtype == value.dtype and torch.equal(shrunk[key], value), key  # counters, RNG states
    assert floats > 0 and any("num_batches_tracked" in k for k in pairs)

    # the trainer resumes from it after epoch 1, its state the rounded one, and finishes in fp32
    resumed_dir = tmp_path / "small"
    result = train(TINY, QUICK, prepared_data_dir, checkpoint_dir=resumed_dir, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.history[0] == full["history"][0]
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_shrinking_a_missing_checkpoint_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        shrink_checkpoint(tmp_path / "none.pt", tmp_path / "out.pt")
