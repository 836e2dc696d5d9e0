"""Baselines with CIFAR stems, the model registry, FLOPs counting."""

import pytest
import torch
from torch import nn
from torchvision import models as tv

from effnet.config import NetworkConfig
from effnet.models import (
    baseline_spec,
    build_model,
    compound_spec,
    count_flops,
    count_parameters,
    last_conv_stage,
    spec_for_name,
)
from effnet.study import BASELINES, model_names


def test_cifar_resnet_stem_keeps_32x32_until_layer2():
    model = build_model(baseline_spec("resnet50")).eval()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    x = torch.zeros(2, 3, 32, 32)
    with torch.no_grad():
        assert model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x))))).shape[-1] == 32
        assert model(x).shape == (2, 100)
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        side = model.layer4(model.layer3(model.layer2(model.layer1(stem))))
    assert side.shape[-1] == 4  # 8x downsampling, like the CIFAR EfficientNets


def test_cifar_densenet_stem():
    with torch.device("meta"):
        model = build_model(baseline_spec("densenet201"))
    assert model.features.conv0.kernel_size == (3, 3) and model.features.conv0.stride == (1, 1)
    assert isinstance(model.features.pool0, nn.Identity)
    with torch.device("meta"):
        out = model.features(torch.zeros(1, 3, 32, 32))
    assert out.shape[-1] == 4


@pytest.mark.parametrize("arch", [m.arch for m in BASELINES])
def test_imagenet_regime_is_torchvision_unchanged(arch):
    with torch.device("meta"):
        ours = build_model(baseline_spec(arch, NetworkConfig(regime="imagenet", num_classes=1000)))
        ref = getattr(tv, arch)()
    assert ours.resolution == 224
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]


def test_every_name_builds_with_its_resolution():
    for name in model_names():
        spec = spec_for_name(name)
        with torch.device("meta"):
            model = build_model(spec)
        assert model.resolution == spec.resolution and model.spec == spec
    assert [spec_for_name(f"efficientnet_b{i}").resolution for i in range(8)] == [32, 34, 37, 43, 54, 65, 75, 86]


def test_searched_coefficients_give_compound_b0_to_b7():
    coefficients = (1.2, 1.1, 1.15)
    b3 = spec_for_name("efficientnet_b3", coefficients=coefficients)
    assert b3 == compound_spec(3.0, coefficients, name="efficientnet_b3")
    assert b3.depth == pytest.approx(1.2**3) and b3.width == pytest.approx(1.1**3)
    assert b3.resolution == round(32 * 1.15**3)
    assert spec_for_name("resnet50", coefficients=coefficients) == baseline_spec("resnet50")


def test_unknown_names_list_the_allowed_ones():
    with pytest.raises(ValueError, match="efficientnet_b0.*resnet152"):
        spec_for_name("efficientnet_b9")
    with pytest.raises(ValueError, match="regime"):
        spec_for_name("resnet50", NetworkConfig(regime="mnist"))


def test_spec_round_trips_through_a_dict():
    spec = compound_spec(2.5, (1.2, 1.1, 1.15))
    assert type(spec).from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("name, channels", [("efficientnet_b0", 1280), ("resnet50", 2048), ("densenet201", 1920)])
def test_last_conv_stage_is_the_last_spatial_layer(name, channels):
    model = build_model(spec_for_name(name)).eval()
    seen = []
    last_conv_stage(model).register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    with torch.no_grad():
        model(torch.zeros(1, 3, model.resolution, model.resolution))
    assert seen == [torch.Size([1, channels, 4, 4])]


def test_flops_count_convolutions_and_linear_layers_only():
    # by hand: conv 8 x (3 x 3 x 3) weights at 4 x 4 outputs + linear 8 x 10; BatchNorm, ReLU, pooling count nothing
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    model.resolution = 4
    assert count_flops(model) == 8 * 27 * 16 + 8 * 10
    assert model.training  # counting leaves the mode as it was


def test_flops_of_a_spec_equal_those_of_its_model():
    spec = spec_for_name("efficientnet_b2", coefficients=(1.2, 1.1, 1.15))
    assert count_flops(spec) == count_flops(build_model(spec))
    assert count_flops(spec_for_name("efficientnet_b0")) == 116_282_368  # B0 at 32x32, CIFAR strides, 100 classes


def test_one_flops_counter_for_search_scaling_evaluate_and_summary(monkeypatch):
    """Every FLOPs figure of the project goes through effnet.models.count_flops and nothing else."""
    import inspect
    from pathlib import Path

    import fvcore.nn
    import torch.utils.flop_counter

    import effnet.evaluate
    import effnet.models
    from effnet.config import GridAxis, SearchConfig
    from effnet.models import describe
    from effnet.scaling import match_flops
    from effnet.search import grid_candidates, place

    def forbidden(*args, **kwargs):
        raise AssertionError("fvcore's FlopCountAnalysis was called: count_flops is the one FLOPs counter")

    callers = []
    real = torch.utils.flop_counter.FlopCounterMode

    class Watched(real):
        def __init__(self, *args, **kwargs):
            callers.append(inspect.stack()[1].function)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(fvcore.nn, "FlopCountAnalysis", forbidden)
    monkeypatch.setattr(torch.utils.flop_counter, "FlopCounterMode", Watched)
    b0 = spec_for_name("efficientnet_b0", NetworkConfig(base_resolution=8))
    match_flops("width", 2.0, b0)  # the scaling study
    grid = SearchConfig(alpha=GridAxis(1.2, 1.2, 0.1), beta=GridAxis(1.1, 1.1, 0.1), gamma=GridAxis(1.15, 1.15, 0.1))
    place(grid_candidates(grid), b0, 2.0, 0.5)  # the search
    describe(b0)  # python -m effnet.summary
    assert effnet.evaluate.count_flops is effnet.models.count_flops  # the evaluate stage's figure
    effnet.evaluate.count_flops(build_model(b0))
    assert len(callers) > 10 and set(callers) == {"count_flops"}
    # and no other module of the library or the stages reaches for a FLOPs counter of its own
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "effnet").glob("*.py")) + sorted((root / "stages").glob("*.py")):
        if path.name != "models.py":
            text = path.read_text()
            assert "flop_counter" not in text and "FlopCountAnalysis" not in text, path


def test_cifar_flops_scale_with_resolution_squared():
    model = build_model(spec_for_name("efficientnet_b0"))
    assert count_flops(model, 64) == pytest.approx(4 * count_flops(model, 32), rel=0.02)
    assert count_parameters(model) == 4_135_648  # B0 with a 100-class classifier


def test_set_bn_momentum_sets_every_batchnorm_or_none() -> None:
    from effnet.models import published_spec, set_bn_momentum

    def momenta(model: nn.Module) -> set:
        return {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}

    own = {"b0": {0.01}, "resnet50": {0.1}}  # EfficientNet: the paper's TF decay 0.99; torchvision's default
    for key, spec in (("b0", published_spec("b0")), ("resnet50", baseline_spec("resnet50"))):
        model = build_model(spec)
        assert momenta(model) == own[key]
        assert set_bn_momentum(model, None) is model and momenta(model) == own[key]
        assert momenta(set_bn_momentum(model, 0.25)) == {0.25}
