"""The trainer: recipe, precision, failures, checkpoints and resumption, DDP, the train stage.

Everything runs on the CPU with small synthetic data: a tiny EfficientNet (width 0.25, one
block per stage) for the library, B0 at 8x8 for the stage run end to end.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
import torch
import yaml

import effnet.train as train_module
from effnet.checkpoint import CHECKPOINT_NAME
from effnet.config import TrainConfig
from effnet.data import SPLITS
from effnet.distributed import Distributed
from effnet.models import ModelSpec, build_model
from effnet.study import model_names
from effnet.train import (
    CPU_BF16_ARCHS,
    METRIC_KEYS,
    TrainingError,
    TrainResult,
    autocast_dtype,
    cpu_has_bf16,
    lr_factor,
    make_optimizer,
    make_scheduler,
    train,
)
from effnet.weights import load_weights, read_weights, save_weights

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")

TINY = ModelSpec(name="tiny", arch="efficientnet", resolution=16, width=0.25, depth=0.34, dropout=0.1)
# A short recipe for the synthetic data (100 classes, 8 training images each).
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


def noise_data_dir(path: Path, classes: int, per_class: int, seed: int = 0) -> Path:
    """A prepared data directory of random images: only memorisation can fit it."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", 2)):
        labels = np.repeat(np.arange(classes), n).astype(np.int64)
        images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
        np.savez(path / f"{split}.npz", images=images, fine_labels=labels, coarse_labels=labels)
    (path / "meta.json").write_text(json.dumps({"mean": [0.5, 0.5, 0.5], "std": [0.29, 0.29, 0.29]}))
    return path


def all_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def save(path: Path, result: TrainResult) -> None:
    save_weights(
        path,
        TINY,
        QUICK,
        model=result.model,
        ema=result.ema,
        metrics=result.metrics,
        history=result.history,
        train_time_s=result.train_time_s,
    )


# --------------------------------------------------------------------------------------
# the recipe
# --------------------------------------------------------------------------------------


def test_schedule_warms_up_linearly_then_reaches_exactly_zero_at_the_last_step():
    total, warmup = 100, 10
    factors = [lr_factor(s, total, warmup) for s in range(total)]
    assert factors[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert factors[warmup - 1] == 1.0 and factors[warmup] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(factors[warmup:]))  # cosine: never rises
    assert factors[-1] == 0.0  # exactly
    assert factors[total // 2 + warmup // 2] == pytest.approx(0.5, abs=0.02)  # half way down the cosine
    assert lr_factor(0, 5, 0) == 1.0 and lr_factor(4, 5, 0) == 0.0
    assert [lr_factor(s, 5, 50) for s in range(5)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 0])  # warmup cut short
    assert lr_factor(0, 1, 0) == 1.0 and lr_factor(1, 2, 0) == 0.0

    # the same through the optimiser, stepped once per optimiser step
    model = build_model(TINY)
    optimizer = make_optimizer(model, QUICK)
    scheduler = make_scheduler(optimizer, total, warmup)
    peak = QUICK.lr * QUICK.batch_size / 256
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(peak / warmup)
    assert max(seen) == pytest.approx(peak)
    assert seen[-1] == 0.0


def test_no_weight_decay_on_batchnorm_and_biases():
    model = build_model(TINY)
    optimizer = make_optimizer(model, QUICK)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == QUICK.weight_decay and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 4 or p.ndim == 2 for p in decay["params"])  # convolution and linear weights
    norm_and_bias = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    norm_and_bias |= {
        id(m.bias) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None
    }
    assert {id(p) for p in no_decay["params"]} == norm_and_bias
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_learning_rate_scales_with_the_global_batch_and_optimizers_are_the_papers():
    model = build_model(TINY)
    for batch in (64, 256, 1024):
        cfg = replace(QUICK, batch_size=batch, lr=0.2)
        assert make_optimizer(model, cfg).param_groups[0]["lr"] == pytest.approx(0.2 * batch / 256)
    sgd = make_optimizer(model, QUICK)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    rmsprop = make_optimizer(model, replace(QUICK, optimizer="rmsprop"))
    assert isinstance(rmsprop, torch.optim.RMSprop)
    assert (rmsprop.defaults["alpha"], rmsprop.defaults["eps"], rmsprop.defaults["momentum"]) == (0.9, 1e-3, 0.9)


def test_precision_rule():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert autocast_dtype("bf16", cuda) == torch.bfloat16
    assert autocast_dtype("fp16", cuda) == torch.float16
    assert autocast_dtype("fp32", cuda) is None
    assert autocast_dtype("bf16", cpu, arch="efficientnet") is None  # slower in bf16 on a CPU (CPU_BF16_ARCHS)
    assert autocast_dtype("bf16", cpu) is None
    assert autocast_dtype("bf16", cpu, cpu_bf16=True) == torch.bfloat16
    assert autocast_dtype("fp16", cpu, cpu_bf16=True) is None
    assert autocast_dtype("fp32", cpu, arch="resnet50") is None
    for arch in CPU_BF16_ARCHS:  # faster in bf16 where the CPU has it natively
        assert autocast_dtype("bf16", cpu, arch=arch) == (torch.bfloat16 if cpu_has_bf16() else None)
        assert autocast_dtype("bf16", cpu, arch=arch, cpu_bf16=False) is None
    with patch.object(train_module, "cpu_has_bf16", return_value=False):
        assert autocast_dtype("bf16", cpu, arch="resnet50") is None


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------


def test_tiny_efficientnet_overfits_a_few_dozen_images(tmp_path):
    data = noise_data_dir(tmp_path / "data", classes=8, per_class=6)  # 48 random images
    spec = replace(TINY, num_classes=8, dropout=0.0)
    cfg = TrainConfig(
        epochs=25,
        batch_size=16,
        lr=0.8,
        warmup_epochs=0.0,
        label_smoothing=0.0,
        weight_decay=0.0,
        ema_decay=0.0,
        drop_path_rate=0.0,
        crop_padding=0,
        hflip=False,
        precision="fp32",
        eval_batch_size=100,
    )
    result = train(spec, cfg, data, checkpoint_dir=tmp_path / "ck", progress=False)
    first, last = result.history[0], result.history[-1]
    assert last["train/loss"] < 0.2 * first["train/loss"]
    assert last["train/top1"] >= 0.9
    assert len(result.history) == 25 and last["lr"] == 0.0
    assert not result.model.training


def test_train_logs_every_epoch_reads_no_test_split_and_keeps_the_ema(prepared_data_dir, tmp_path, monkeypatch):
    splits = []
    original = train_module.load_split
    monkeypatch.setattr(train_module, "load_split", lambda d, s: splits.append(s) or original(d, s))
    logged = []
    result = train(
        TINY,
        QUICK,
        prepared_data_dir,
        checkpoint_dir=tmp_path / "ck",
        progress=False,
        callback=lambda epoch, metrics: logged.append((epoch, metrics)),
    )
    assert "test" not in splits and set(splits) <= set(SPLITS)
    assert [e for e, _ in logged] == [1, 2]
    assert all(tuple(m) == METRIC_KEYS for _, m in logged)
    assert all(0.0 <= m[k] <= 1.0 for _, m in logged for k in METRIC_KEYS if "top" in k)
    assert result.metrics == {"epoch": 2, **logged[-1][1]}
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.ema is not None and not result.ema.training
    raw, ema = result.model.state_dict(), result.ema.state_dict()
    assert raw.keys() == ema.keys() and not all_equal(raw, ema)
    assert (tmp_path / "ck" / CHECKPOINT_NAME).is_file()  # removing it is the caller's job

    # the weights file: exactly these keys, EMA loaded by default, raw on request
    path = tmp_path / "models" / "model.pt"
    save(path, result)
    payload = read_weights(path)
    assert set(payload) == {
        "spec",
        "state_dict",
        "ema_state_dict",
        "metrics",
        "history",
        "train_time_s",
        "train_config",
    }
    assert payload["spec"] == TINY.to_dict() and payload["train_config"]["lr"] == QUICK.lr
    assert all_equal(load_weights(path).state_dict(), {k: v.cpu() for k, v in ema.items()})
    assert all_equal(load_weights(path, ema=False).state_dict(), {k: v.cpu() for k, v in raw.items()})
    assert not load_weights(path).training and load_weights(path).spec == TINY


def test_ema_disabled_is_none(prepared_data_dir, tmp_path):
    result = train(
        TINY, replace(QUICK, epochs=1, ema_decay=0.0), prepared_data_dir, checkpoint_dir=tmp_path / "ck", progress=False
    )
    assert result.ema is None
    assert result.metrics["val/top1_ema"] == result.metrics["val/top1"]
    save(tmp_path / "model.pt", result)
    assert read_weights(tmp_path / "model.pt")["ema_state_dict"] is None
    assert all_equal(load_weights(tmp_path / "model.pt").state_dict(), result.model.state_dict())


def _hooked_build_model(hook):
    def build(spec, **kwargs):
        model = build_model(spec, **kwargs)
        model.register_forward_hook(hook)
        return model

    return build


def test_bf16_autocast_runs_on_the_cpu(prepared_data_dir, tmp_path, monkeypatch):
    dtypes = []
    monkeypatch.setattr(
        train_module,
        "build_model",
        _hooked_build_model(lambda module, inputs, output: dtypes.append(output.dtype) if module.training else None),
    )
    cfg = replace(QUICK, epochs=1, precision="bf16")
    result = train(TINY, cfg, prepared_data_dir, checkpoint_dir=tmp_path / "bf16", progress=False, cpu_bf16=True)
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert math.isfinite(result.metrics["train/loss"])
    dtypes.clear()
    train(TINY, cfg, prepared_data_dir, checkpoint_dir=tmp_path / "fp32", progress=False)  # CPU default: fp32
    assert set(dtypes) == {torch.float32}


def test_non_finite_loss_names_epoch_and_step_and_keeps_the_last_good_checkpoint(
    prepared_data_dir, tmp_path, monkeypatch
):
    steps = 100 // QUICK.batch_size  # train_per_class 1: 100 images, 4 steps per epoch
    calls = []

    def poison(module, inputs, output):
        if module.training:
            calls.append(1)
            if len(calls) == steps + 3:  # epoch 2, step 3
                return output * float("nan")

    monkeypatch.setattr(train_module, "build_model", _hooked_build_model(poison))
    with pytest.raises(TrainingError, match=r"epoch 2, step 3 of 4") as error:
        train(TINY, replace(QUICK, epochs=3), prepared_data_dir, checkpoint_dir=tmp_path / "ck", progress=False)
    assert "last good checkpoint" in str(error.value)
    checkpoint = torch.load(tmp_path / "ck" / CHECKPOINT_NAME, weights_only=True)
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())


def test_out_of_memory_names_the_model_and_the_batch_size(prepared_data_dir, tmp_path, monkeypatch):
    def oom(module, inputs, output):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_module, "build_model", _hooked_build_model(oom))
    with pytest.raises(TrainingError, match=r"tiny.*train\.batch_size 25.*-S train\.batch_size=12"):
        train(TINY, QUICK, prepared_data_dir, checkpoint_dir=tmp_path / "ck", progress=False)


def test_finished_checkpoint_is_reused_and_other_settings_start_afresh(prepared_data_dir, tmp_path, capsys):
    checkpoints = tmp_path / "ck"
    first = train(TINY, QUICK, prepared_data_dir, checkpoint_dir=checkpoints, progress=True)
    again = train(TINY, QUICK, prepared_data_dir, checkpoint_dir=checkpoints, progress=True)  # nothing left to train
    assert "resuming after epoch 2 of 2" in capsys.readouterr().out
    assert all_equal(first.model.state_dict(), again.model.state_dict())
    assert again.history == first.history

    other = train(TINY, replace(QUICK, lr=0.1, epochs=1), prepared_data_dir, checkpoint_dir=checkpoints, progress=True)
    out = capsys.readouterr().out
    assert "other settings" in out and "train.lr: 0.4 -> 0.1" in out and "starting afresh" in out
    assert len(other.history) == 1
    assert torch.load(checkpoints / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1


def test_resume_works_when_a_device_map_location_would_put_the_rng_states_on_another_device(
    prepared_data_dir, tmp_path, monkeypatch
):
    """map_location=<device> puts every tensor of a checkpoint, the RNG states too, on that device (on a GPU: CUDA,
    where `.numpy()` fails). Here a torch.load that sends tensors to the "meta" device unless asked for the CPU stands
    in for that: resuming must still work, and finish with the weights of an uninterrupted run."""
    whole = train(TINY, QUICK, prepared_data_dir, checkpoint_dir=tmp_path / "whole", progress=False)
    checkpoints = tmp_path / "ck"

    class Stop(Exception):
        pass

    def stop_after_epoch_1(epoch, metrics):  # the callback runs once the epoch's checkpoint is written
        raise Stop

    with pytest.raises(Stop):
        train(TINY, QUICK, prepared_data_dir, checkpoint_dir=checkpoints, progress=False, callback=stop_after_epoch_1)

    real_load, locations = torch.load, []

    def load_elsewhere(*args, map_location=None, **kwargs):
        locations.append(map_location)
        payload = real_load(*args, map_location="cpu", **kwargs)
        if map_location == "cpu":  # exactly the CPU, whatever the training device
            return payload
        to_meta = lambda x: x.to("meta") if isinstance(x, torch.Tensor) else x  # noqa: E731
        return torch.utils._pytree.tree_map(to_meta, payload)

    monkeypatch.setattr(torch, "load", load_elsewhere)
    resumed = train(TINY, QUICK, prepared_data_dir, checkpoint_dir=checkpoints, progress=False)
    assert locations and all(m == "cpu" for m in locations)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert all_equal(whole.model.state_dict(), resumed.model.state_dict())
    assert all_equal(whole.ema.state_dict(), resumed.ema.state_dict())


def test_the_ema_broadcast_sends_only_tensors_on_the_training_device():
    """EMA's update counter lives on the CPU whatever the model's device: NCCL could not broadcast it."""
    model = build_model(TINY).to("meta")  # "meta" stands in for a CUDA device
    ema = train_module.EMA(model, 0.9)
    shared = train_module.shared_state(model, ema, torch.device("meta"))
    assert ema.n_averaged.device.type == "cpu" and all(t is not ema.n_averaged for t in shared)
    assert all(t.device.type == "meta" for t in shared)
    assert len(shared) == len(list(model.buffers())) + len(ema.state_dict()) - 1
    assert len(train_module.shared_state(model, None, torch.device("meta"))) == len(list(model.buffers()))


def test_deadline_comes_from_the_environment_and_bad_values_are_named():
    assert train_module.deadline_from_env({}) is None
    assert train_module.deadline_from_env({"EFFNET_DEADLINE": "1000.5"}) == 1000.5
    budget = train_module.deadline_from_env({"EFFNET_TIME_BUDGET_S": "60"})
    assert budget == pytest.approx(train_module._IMPORTED_AT + 60)
    assert train_module.deadline_from_env({"EFFNET_DEADLINE": "1000", "EFFNET_TIME_BUDGET_S": "60"}) == 1000  # earlier
    with pytest.raises(TrainingError, match="EFFNET_TIME_BUDGET_S must be a number of seconds, got 'ten'"):
        train_module.deadline_from_env({"EFFNET_TIME_BUDGET_S": "ten"})
    with pytest.raises(TrainingError, match="EFFNET_DEADLINE must be positive"):
        train_module.deadline_from_env({"EFFNET_DEADLINE": "-1"})


def test_time_budget_stops_after_an_epoch_with_status_75_and_resuming_ends_as_an_uninterrupted_run(
    prepared_data_dir, tmp_path, capsys
):
    cfg = replace(QUICK, epochs=3)
    whole = train(TINY, cfg, prepared_data_dir, checkpoint_dir=tmp_path / "whole", progress=False, deadline=math.inf)

    checkpoints = tmp_path / "ck"
    # a deadline already past: the first epoch of a process is trained (nothing says it cannot fit), then it stops
    with pytest.raises(train_module.TimeBudgetReached) as stop:
        train(TINY, cfg, prepared_data_dir, checkpoint_dir=checkpoints, progress=True, deadline=time.time())
    assert stop.value.code == train_module.RESUME_EXIT_STATUS == 75
    assert isinstance(stop.value, SystemExit) and not isinstance(stop.value, Exception)  # no `except Exception` eats it
    assert "time budget reached after epoch 1 of 3" in str(stop.value) and "resume" in capsys.readouterr().out
    assert torch.load(checkpoints / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1

    # resumed under a budget that the checkpoint's epoch time says cannot fit: stops at once, nothing lost
    with pytest.raises(train_module.TimeBudgetReached, match="after epoch 1 of 3"):
        train(TINY, cfg, prepared_data_dir, checkpoint_dir=checkpoints, progress=False, deadline=time.time() + 1e-3)
    assert torch.load(checkpoints / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1

    resumed = train(
        TINY, cfg, prepared_data_dir, checkpoint_dir=checkpoints, progress=False, deadline=time.time() + 3600
    )
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert all_equal(whole.model.state_dict(), resumed.model.state_dict())
    assert all_equal(whole.ema.state_dict(), resumed.ema.state_dict())
    for key in ("train/loss", "val/top1", "val/top1_ema", "lr"):
        assert [h[key] for h in whole.history] == [h[key] for h in resumed.history]


def test_a_budget_shorter_than_an_epoch_trains_one_then_refuses_instead_of_looping_on_75(
    prepared_data_dir, tmp_path, monkeypatch
):
    cfg = replace(QUICK, epochs=3)
    checkpoints = tmp_path / "ck"
    resume_file = tmp_path / "resume.txt"
    resume_file.write_text("")
    monkeypatch.delenv(train_module.DEADLINE_ENV, raising=False)
    monkeypatch.setenv(train_module.BUDGET_ENV, "0.001")  # counted from the import: long past, and the same every rerun
    monkeypatch.setenv(train_module.RESUME_FILE_ENV, str(resume_file))
    assert train_module.repeated_budget() == 0.001
    # the first process has no timing yet: it trains one epoch, saves it and asks to be resumed (75)
    with pytest.raises(train_module.TimeBudgetReached, match="after epoch 1 of 3.*run the same command again"):
        train(TINY, cfg, prepared_data_dir, checkpoint_dir=checkpoints, progress=False)
    assert resume_file.read_text() == f"{checkpoints / CHECKPOINT_NAME}\t1/3\n"  # what a wrapper of dvc reads
    # the rerun knows an epoch cannot fit that budget: one clear error, not another 75 that would never progress
    with pytest.raises(
        TrainingError,
        match=r"time budget \(EFFNET_TIME_BUDGET_S=0.001 s\) is shorter than one epoch "
        r"\(about \d+ s, measured in .*last.pt\), so no rerun would make progress; "
        r"give at least EFFNET_TIME_BUDGET_S=\d+ or unset it",
    ):
        train(TINY, cfg, prepared_data_dir, checkpoint_dir=checkpoints, progress=False)
    assert torch.load(checkpoints / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1  # nothing lost
    assert resume_file.read_text().count("\n") == 1  # the refusal is no "resume me"
    # an absolute deadline is a time slot: a later call brings a later one, so that stays 75 and says so
    monkeypatch.delenv(train_module.BUDGET_ENV)
    monkeypatch.setenv(train_module.DEADLINE_ENV, f"{time.time() + 1e-3:.3f}")
    assert train_module.repeated_budget() is None
    with pytest.raises(train_module.TimeBudgetReached, match="no epoch fits before the deadline.*later deadline"):
        train(TINY, cfg, prepared_data_dir, checkpoint_dir=checkpoints, progress=False)


def _scripted_loss(monkeypatch, losses):
    """Make every training step report `losses(step)` (finite) as its loss; the step itself still runs."""
    real = train_module.TrainState.step
    counter = [0]

    def step(self, images, labels, num_updates):
        loss, logits = real(self, images, labels, num_updates)
        counter[0] += 1
        return torch.full_like(loss, losses(counter[0] - 1)), logits

    monkeypatch.setattr(train_module.TrainState, "step", step)


def test_a_diverged_but_finite_loss_stops_the_run_as_a_nan_does(prepared_data_dir, tmp_path, monkeypatch):
    _scripted_loss(monkeypatch, lambda step: 3.6e14)  # what lr 1e6 with clipping gave: finite, and no learning
    with pytest.raises(
        TrainingError,
        match=r"tiny: training diverged at epoch 1: the loss stayed above 46.1 "
        r"\(10 x ln 100, a uniform guess's loss\) for 4 steps up to step 4 of 4; "
        r"no checkpoint was written. Try a lower train.lr",
    ):
        train(TINY, QUICK, prepared_data_dir, checkpoint_dir=tmp_path / "ck", progress=False)
    assert not (tmp_path / "ck" / CHECKPOINT_NAME).exists()


def test_a_short_spike_of_the_loss_is_not_divergence(prepared_data_dir, tmp_path, monkeypatch):
    # 4 steps an epoch: a spike over the bound for 3 of them, then back to a normal loss, twice
    _scripted_loss(monkeypatch, lambda step: 1e3 if step % 4 < 3 else 4.0)
    result = train(TINY, QUICK, prepared_data_dir, checkpoint_dir=tmp_path / "ck", progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_the_real_loss_of_a_normal_run_stays_far_below_the_divergence_bound(prepared_data_dir, tmp_path):
    result = train(TINY, QUICK, prepared_data_dir, checkpoint_dir=tmp_path / "ck", progress=False)
    bound = train_module.DIVERGENCE_FACTOR * math.log(100)
    assert max(h["train/loss"] for h in result.history) < bound / 5


def test_progress_lines_inside_an_epoch_when_stderr_is_no_terminal(prepared_data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(train_module.PROGRESS_ENV, "1e-9")  # a line at every step but the last
    train(TINY, replace(QUICK, epochs=1), prepared_data_dir, checkpoint_dir=tmp_path / "ck", progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if " a step, about " in line]
    assert [line.split(": step ")[1].split(",")[0] for line in lines] == ["1/4", "2/4", "3/4"]
    assert lines[0].startswith("tiny epoch 1/1: step 1/4, ") and lines[0].endswith(" to the epoch's end")
    assert train_module.progress_interval({}) == 60.0
    assert train_module.progress_interval({"EFFNET_PROGRESS_S": "0"}) is None
    with pytest.raises(TrainingError, match="EFFNET_PROGRESS_S must be a number of seconds"):
        train_module.progress_interval({"EFFNET_PROGRESS_S": "often"})


def test_a_truncated_checkpoint_or_weights_file_is_one_line_naming_it_and_the_fix(prepared_data_dir, tmp_path):
    from effnet import cli
    from effnet.checkpoint import load_checkpoint
    from effnet.io import DamagedFileError

    result = train(TINY, replace(QUICK, epochs=1), prepared_data_dir, checkpoint_dir=tmp_path / "ck", progress=False)
    checkpoint = tmp_path / "ck" / CHECKPOINT_NAME
    weights = tmp_path / "model" / "model.pt"
    save_weights(weights, TINY, QUICK, model=result.model, ema=result.ema, metrics=result.metrics)
    for path in (checkpoint, weights):  # cut short, as a copy that ran out of space leaves it
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(
        DamagedFileError,
        match=rf"^{checkpoint}: damaged, cannot be read \(.*\); delete it "
        rf"\(rm {checkpoint}\) and rerun: the run starts afresh",
    ) as raised:
        train(TINY, replace(QUICK, epochs=1), prepared_data_dir, checkpoint_dir=tmp_path / "ck", progress=False)
    assert cli.expected(raised.value) and "\n" not in str(raised.value)  # a stage prints it as one `error:` line
    with pytest.raises(
        DamagedFileError,
        match=rf"^{weights}: damaged, .*train the model again: delete it "
        rf"\(rm {weights}\) and run dvc repro",
    ):
        read_weights(weights)
    checkpoint.unlink()
    assert load_checkpoint(checkpoint) is None  # deleted, as the message says: a fresh start


def test_batch_size_must_divide_over_the_processes(prepared_data_dir, tmp_path):
    dist = Distributed(rank=0, world_size=2)
    with pytest.raises(TrainingError, match="does not divide over 2 processes"):
        train(
            TINY, replace(QUICK, batch_size=25), prepared_data_dir, checkpoint_dir=tmp_path, dist=dist, progress=False
        )


# --------------------------------------------------------------------------------------
# the stage: resumption after SIGKILL, errors
# --------------------------------------------------------------------------------------


def _stage_params(tmp_path: Path, **train_overrides) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["network"].update(base_resolution=8, efficientnet_scaling="published")  # B0 at 8x8
    params["train"].update(
        {
            "epochs": 6,
            "train_per_class": 2,
            "batch_size": 50,
            "warmup_epochs": 1.0,
            "precision": "fp32",
            "eval_batch_size": 200,
            **train_overrides,
        }
    )
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _stage_command(params: Path, data: Path, run: Path) -> list[str]:
    return [
        PYTHON,
        str(ROOT / "stages" / "train.py"),
        "--model",
        "efficientnet_b0",
        "--params",
        str(params),
        "--data",
        str(data),
        "--out",
        str(run / "model"),
        "--live",
        str(run / "live"),
        "--checkpoints",
        str(run / "checkpoints"),
    ]


@pytest.mark.slow
def test_stage_killed_mid_run_resumes_bit_for_bit(prepared_data_dir, tmp_path):
    params = _stage_params(tmp_path)
    env = {**os.environ, "PYTHONHASHSEED": "0"}

    whole = tmp_path / "whole"
    done = subprocess.run(
        _stage_command(params, prepared_data_dir, whole), capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert not (whole / "checkpoints").exists()  # removed once model.pt is written

    killed = tmp_path / "killed"
    checkpoint = killed / "checkpoints" / CHECKPOINT_NAME
    process = subprocess.Popen(
        _stage_command(params, prepared_data_dir, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= finished < 6 and not (killed / "model" / "model.pt").exists()

    resumed = subprocess.run(
        _stage_command(params, prepared_data_dir, killed), capture_output=True, text=True, env=env, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stdout

    a, b = read_weights(whole / "model" / "model.pt"), read_weights(killed / "model" / "model.pt")
    assert all_equal(a["state_dict"], b["state_dict"])
    assert all_equal(a["ema_state_dict"], b["ema_state_dict"])
    for key in ("train/loss", "train/top1", "val/top1", "val/top1_ema", "lr"):
        assert [h[key] for h in a["history"]] == [h[key] for h in b["history"]]

    # DVCLive: one row per epoch, none lost or repeated across the kill
    for run in (whole, killed):
        rows = (run / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
        assert [r.split("\t")[0] for r in rows[1:]] == [str(s) for s in range(6)]
        assert json.loads((run / "live" / "metrics.json").read_text())["step"] == 5
        assert (run / "live" / "params.yaml").is_file()


@pytest.mark.slow
def test_stage_out_of_time_exits_75_without_weights_and_the_rerun_finishes_as_an_uninterrupted_run(
    prepared_data_dir, tmp_path
):
    params = _stage_params(tmp_path, epochs=2, train_per_class=1)
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    env.pop("EFFNET_DEADLINE", None)
    env.pop("EFFNET_TIME_BUDGET_S", None)

    whole = tmp_path / "whole"
    done = subprocess.run(
        _stage_command(params, prepared_data_dir, whole), capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr

    run = tmp_path / "budget"
    stopped = subprocess.run(
        _stage_command(params, prepared_data_dir, run),
        capture_output=True,
        text=True,
        env={**env, "EFFNET_TIME_BUDGET_S": "0.001"},
        timeout=300,
    )
    assert stopped.returncode == 75, stopped.stdout + stopped.stderr
    assert "time budget reached after epoch 1 of 2" in stopped.stdout
    assert not (run / "model" / "model.pt").exists()  # never mistaken for a result
    assert torch.load(run / "checkpoints" / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1
    assert len((run / "live" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()) == 2  # 1 epoch

    resumed = subprocess.run(
        _stage_command(params, prepared_data_dir, run), capture_output=True, text=True, env=env, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 1 of 2" in resumed.stdout
    a, b = read_weights(whole / "model" / "model.pt"), read_weights(run / "model" / "model.pt")
    assert all_equal(a["state_dict"], b["state_dict"]) and all_equal(a["ema_state_dict"], b["ema_state_dict"])
    assert not (run / "checkpoints").exists()


def _load_stage():
    spec = importlib.util.spec_from_file_location("stage_train", ROOT / "stages" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_rejects_a_misspelt_param_before_training(prepared_data_dir, tmp_path, capsys):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["epoch"] = params["train"].pop("epochs")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    status = _load_stage().main(
        [
            "--model",
            "resnet50",
            "--params",
            str(path),
            "--data",
            str(prepared_data_dir),
            "--out",
            str(tmp_path / "m"),
            "--live",
            str(tmp_path / "l"),
            "--checkpoints",
            str(tmp_path / "c"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("error:") and "train.epoch" in err
    assert not any((tmp_path / d).exists() for d in ("m", "l", "c"))


def test_stage_rejects_an_unknown_model_listing_the_allowed_ones(capsys):
    with pytest.raises(SystemExit) as exit_:  # a usage error, from argparse: exit status 2, no traceback
        _load_stage().main(["--model", "efficientnet_b9"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "efficientnet_b9" in err
    assert all(name in err for name in model_names())


def test_stage_needs_the_search_result_for_searched_efficientnets(tmp_path, capsys):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["network"]["efficientnet_scaling"] = "searched"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    stage = _load_stage()
    assert (
        stage.main(["--model", "efficientnet_b1", "--params", str(path), "--coefficients", str(tmp_path / "none.json")])
        == 1
    )
    assert "run the search stage first" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# two processes under torchrun
# --------------------------------------------------------------------------------------

DDP_DRIVER = r'''
import json, os, sys
from dataclasses import replace
from pathlib import Path
from unittest.mock import patch
import torch
import effnet.train as train_module
from effnet.config import TrainConfig
from effnet.data import DeviceLoader
from effnet.distributed import cleanup, init_distributed
from effnet.models import ModelSpec

seen = []

class Recording(DeviceLoader):
    """Yields the real labels but records which training images (by index) this rank drew."""

    def __init__(self, images, labels, **kwargs):
        super().__init__(images, labels, **kwargs)
        if self.train:
            self.true_labels, self.labels = self.labels, torch.arange(self.size)

    def __iter__(self):
        if not self.train:
            yield from super().__iter__()
            return
        epoch = []
        seen.append(epoch)
        for images, index in super().__iter__():
            epoch.extend(index.tolist())
            yield images, self.true_labels[index]

train_module.DeviceLoader = Recording
dist = init_distributed()
spec = ModelSpec(name="tiny", arch="efficientnet", resolution=16, width=0.25, depth=0.34, dropout=0.1)
cfg = TrainConfig(epochs=2, train_per_class=2, batch_size=50, lr=0.4, warmup_epochs=0.5, precision="fp32",
                  eval_batch_size=100, ema_decay=0.9)
logged = []
out = Path(sys.argv[3])
result = train_module.train(spec, cfg, Path(sys.argv[2]), checkpoint_dir=out / "ck", dist=dist, progress=False,
                            callback=lambda e, m: logged.append(e))
torch.save({"model": result.model.state_dict(), "ema": result.ema.state_dict(), "metrics": result.metrics},
           out / f"rank{dist.rank}.pt")
(out / f"rank{dist.rank}.json").write_text(json.dumps({"seen": seen, "logged": logged, "world": dist.world_size}))
cleanup()
'''


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found")
def test_two_processes_under_torchrun_split_the_data_and_end_identical(prepared_data_dir, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DDP_DRIVER)
    done = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc-per-node=2", str(driver), str(ROOT), str(prepared_data_dir), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    assert ranks[0]["logged"] == [1, 2] and ranks[1]["logged"] == []  # only rank 0 logs
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 2
    for epoch in range(2):
        a, b = ranks[0]["seen"][epoch], ranks[1]["seen"][epoch]
        assert len(a) == len(b) == 100  # 200 images, global batch 50: 4 steps of 25 per rank
        assert len(set(a)) == 100 and not set(a) & set(b)
        assert set(a) | set(b) == set(range(200))
    assert ranks[0]["seen"][0] != ranks[0]["seen"][1]  # reshuffled every epoch

    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all_equal(states[0]["model"], states[1]["model"])
    assert all_equal(states[0]["ema"], states[1]["ema"])
    assert states[0]["metrics"] == pytest.approx(
        {
            **states[1]["metrics"],
            "images_per_s": states[0]["metrics"]["images_per_s"],
            "epoch_time_s": states[0]["metrics"]["epoch_time_s"],
        }
    )
