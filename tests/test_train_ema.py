"""The trainer's EMA: floats averaged in one foreach call, integer buffers (BatchNorm's counters) copied in another."""

from __future__ import annotations

import torch
from torch import nn

from effnet import train as train_module


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))


def step(model: nn.Module) -> None:
    """A training forward (moves the running statistics and counts a batch) and a change of every weight."""
    model.train()
    model(torch.randn(2, 3, 8, 8))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)


def test_after_an_update_the_integer_buffers_equal_the_models_and_the_floats_are_averaged(monkeypatch):
    model = bn_net()
    ema = train_module.EMA(model, 0.9)
    calls = []
    real_copy = torch._foreach_copy_

    def counting_copy(selves, sources, *args, **kwargs):
        calls.append(len(selves))
        return real_copy(selves, sources, *args, **kwargs)

    monkeypatch.setattr(torch, "_foreach_copy_", counting_copy)
    for n in range(3):
        before = {k: v.clone() for k, v in ema.module.state_dict().items()}
        step(model)
        ema.update(model, n)
        decay = min(0.9, (1 + n) / (10 + n))
        model_state, ema_state = model.state_dict(), ema.module.state_dict()
        for key, value in model_state.items():
            if value.is_floating_point():
                torch.testing.assert_close(ema_state[key], before[key] + (value - before[key]) * (1 - decay))
            else:
                assert key.endswith("num_batches_tracked")
                assert ema_state[key].dtype == torch.int64 and torch.equal(ema_state[key], value)
    assert calls == [2, 2, 2]  # one call per update, for both BatchNorm counters
    assert int(ema.module[1].num_batches_tracked) == 3 and int(ema.n_averaged) == 3
    # copies, not aliases: the model's next batch does not move the EMA's counter
    step(model)
    assert int(model[1].num_batches_tracked) == 4 and int(ema.module[1].num_batches_tracked) == 3


def test_a_network_without_integer_buffers_makes_no_copy_call(monkeypatch):
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    ema = train_module.EMA(model, 0.5)
    monkeypatch.setattr(torch, "_foreach_copy_", lambda *a, **k: (_ for _ in ()).throw(AssertionError("called")))
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model, 0)
    torch.testing.assert_close(ema.module[0].weight, model[0].weight - 1.0 + 1.0 * (1 - min(0.5, 1 / 10)))
