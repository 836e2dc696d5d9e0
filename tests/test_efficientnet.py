"""EfficientNet as the paper builds it: Table 1 rows, scaling rules, compound rule, MBConv."""

import math

import pytest
import torch
from torch import nn
from torchvision.ops import StochasticDepth

from effnet.config import NetworkConfig
from effnet.efficientnet import (
    B0_STAGES,
    PUBLISHED,
    MBConv,
    cifar_strides,
    compound_scaling,
    efficientnet,
    published_dropout,
    scale_channels,
    scale_repeats,
    scale_stages,
)
from effnet.models import build_model, compound_spec, count_flops, count_parameters, published_spec

# torchvision's efficientnet_b0..b7 with 1000 classes (the figures, not computed here)
TORCHVISION_PARAMS = [5_288_548, 7_794_184, 9_109_994, 12_233_232, 19_341_616, 30_389_784, 43_040_704, 66_347_960]
PAPER_FLOPS = [0.39e9, 0.70e9, 1.0e9, 1.8e9, 4.2e9, 9.9e9, 19e9, 37e9]  # Table 2
VARIANTS = list(PUBLISHED)


def test_table1_rows_are_unscaled_b0():
    assert [(s.expand_ratio, s.kernel, s.stride, s.out_channels, s.repeats) for s in B0_STAGES] == [
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 2),
        (6, 5, 2, 40, 2),
        (6, 3, 2, 80, 3),
        (6, 5, 1, 112, 3),
        (6, 5, 2, 192, 4),
        (6, 3, 1, 320, 1),
    ]
    assert scale_stages(B0_STAGES, 1.0, 1.0) == B0_STAGES


@pytest.mark.parametrize(
    "channels, width, expected",
    [
        (32, 1.0, 32),
        (32, 1.1, 32),
        (320, 1.1, 352),
        (1280, 1.8, 2304),
        (16, 1.8, 32),
        (40, 1.4, 56),
        (11, 1.0, 16),  # nearest multiple 8 would be 27% below 11: the 90% rule adds a step
        (3, 1.0, 8),  # never below the divisor
    ],
)
def test_scale_channels_rounds_to_multiple_of_8_never_below_90_percent(channels, width, expected):
    got = scale_channels(channels, width)
    assert got == expected
    assert got % 8 == 0 and got >= 0.9 * channels * width


@pytest.mark.parametrize("repeats, depth, expected", [(1, 1.0, 1), (3, 1.1, 4), (4, 1.8, 8), (1, 3.1, 4), (2, 1.2, 3)])
def test_scale_repeats_rounds_up(repeats, depth, expected):
    assert scale_repeats(repeats, depth) == expected


@pytest.mark.parametrize("variant, expected", list(zip(VARIANTS, TORCHVISION_PARAMS, strict=True)))
def test_imagenet_parameter_counts_equal_torchvision(variant, expected):
    with torch.device("meta"):
        model = build_model(published_spec(variant, NetworkConfig(regime="imagenet", num_classes=1000)))
    assert count_parameters(model) == expected


@pytest.mark.parametrize("variant, paper", list(zip(VARIANTS, PAPER_FLOPS, strict=True)))
def test_imagenet_flops_within_10_percent_of_table2(variant, paper):
    model = build_model(published_spec(variant, NetworkConfig(regime="imagenet", num_classes=1000)))
    assert model.resolution == PUBLISHED[variant].resolution
    flops = count_flops(model)
    assert abs(flops / paper - 1) < 0.10, f"{variant}: {flops / 1e9:.3f} GFLOPs against the paper's {paper / 1e9}"


def _feature_side(model, resolution):
    with torch.no_grad():
        return model.features(torch.zeros(1, 3, resolution, resolution)).shape[-1]


def test_forward_shapes_in_both_regimes():
    imagenet = efficientnet(1.0, 1.0, 224, 0.2, num_classes=1000, regime="imagenet").eval()
    with torch.no_grad():
        assert imagenet(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)
    assert _feature_side(imagenet, 224) == 7  # 32x downsampling
    for downsample, side in [(8, 4), (16, 2)]:
        cifar = efficientnet(1.0, 1.0, 32, 0.2, num_classes=100, regime="cifar", cifar_downsample=downsample).eval()
        with torch.no_grad():
            assert cifar(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
        assert _feature_side(cifar, 32) == side


def test_cifar_regime_changes_only_strides():
    stem_stride, stages = cifar_strides(B0_STAGES, 8)
    assert stem_stride == 1
    assert [s.stride for s in stages] == [1, 1, 2, 2, 1, 2, 1]
    unchanged = [(s.out_channels, s.repeats, s.kernel) for s in B0_STAGES]
    assert [(s.out_channels, s.repeats, s.kernel) for s in stages] == unchanged
    cifar = efficientnet(1.0, 1.0, 32, 0.2, num_classes=1000, regime="cifar")
    imagenet = efficientnet(1.0, 1.0, 224, 0.2, num_classes=1000, regime="imagenet")
    assert count_parameters(cifar) == count_parameters(imagenet)
    with pytest.raises(ValueError, match="downsample"):
        cifar_strides(B0_STAGES, 4)


def test_mbconv_structure():
    first = MBConv(32, 16, expand_ratio=1, kernel=3, stride=1, drop_path=0.0)
    assert len(first.block) == 3  # no expansion when the ratio is 1: depthwise, SE, project
    block = MBConv(24, 24, expand_ratio=6, kernel=5, stride=1, drop_path=0.1)
    expand, depthwise, se, project = block.block
    assert depthwise[0].groups == 144 and depthwise[0].kernel_size == (5, 5)
    assert se.fc1.out_channels == 24 // 4  # bottleneck from the block's input channels, not the expanded ones
    assert isinstance(se.activation, nn.SiLU) and isinstance(se.scale_activation, nn.Sigmoid)
    assert len(project) == 2 and isinstance(project[1], nn.BatchNorm2d)  # no activation after projection
    assert block.use_residual and isinstance(block.stochastic_depth, StochasticDepth)
    assert not MBConv(24, 40, 6, 5, 1, 0.1).use_residual
    assert not MBConv(24, 24, 6, 5, 2, 0.1).use_residual
    bn = expand[1]
    assert bn.momentum == pytest.approx(0.01) and bn.eps == pytest.approx(1e-3)  # TF decay 0.99, eps 1e-3


def test_stochastic_depth_schedule_rises_linearly_to_0_2():
    model = efficientnet(1.0, 1.0, 32, 0.2, regime="cifar")
    blocks = [b for stage in model.features[1:-1] for b in stage]
    assert len(blocks) == 16
    for idx, block in enumerate(blocks):
        if block.use_residual:
            assert block.stochastic_depth.p == pytest.approx(0.2 * idx / 16)
        else:
            assert isinstance(block.stochastic_depth, nn.Identity)
    assert blocks[-2].stochastic_depth.p == pytest.approx(0.2 * 14 / 16)


def test_stochastic_depth_is_identity_in_eval_and_unbiased_in_training():
    torch.manual_seed(0)
    block = MBConv(16, 16, expand_ratio=6, kernel=3, stride=1, drop_path=0.3).eval()
    x = torch.randn(8, 16, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x), block.block(x) + x)
    drop = block.stochastic_depth.train()
    branch = torch.ones(20_000, 4, 2, 2)
    out = drop(branch)
    kept = (out.flatten(1) != 0).all(dim=1).float().mean().item()
    assert kept == pytest.approx(0.7, abs=0.02)  # whole samples dropped with probability 0.3
    assert out.mean().item() == pytest.approx(1.0, abs=0.03)  # survivors scaled by 1/0.7: expectation kept


def test_dropout_per_variant():
    for variant, v in PUBLISHED.items():
        with torch.device("meta"):
            model = build_model(published_spec(variant))
        assert model.classifier[0].p == v.dropout
    assert published_dropout(0) == 0.2 and published_dropout(7) == 0.5 and published_dropout(9) == 0.5
    assert published_dropout(2.5) == pytest.approx(0.3)
    assert published_dropout(3.5) == pytest.approx(0.35)


def test_compound_rule_at_phi_0_is_b0_exactly():
    for regime in ("cifar", "imagenet"):
        network = NetworkConfig(regime=regime)
        b0, phi0 = published_spec("b0", network), compound_spec(0.0, (1.2, 1.1, 1.15), network)
        assert (phi0.width, phi0.depth, phi0.resolution) == (b0.width, b0.depth, b0.resolution)
        assert phi0.dropout == b0.dropout
        a, b = build_model(b0), build_model(phi0)
        assert [t.shape for t in a.state_dict().values()] == [t.shape for t in b.state_dict().values()]


def test_compound_rule_at_paper_coefficients():
    s = compound_scaling(1.2, 1.1, 1.15, 1.0, base_resolution=224)
    assert (s.depth, s.width, s.resolution) == (pytest.approx(1.2), pytest.approx(1.1), 258)
    s = compound_scaling(1.2, 1.1, 1.15, 1.0, base_resolution=32)
    assert s.resolution == 37
    s = compound_scaling(1.2, 1.1, 1.15, 2.5, base_resolution=32)
    assert s.depth == pytest.approx(1.2**2.5) and s.width == pytest.approx(1.1**2.5)
    assert s.resolution == round(32 * 1.15**2.5)
    # FLOPs grow about (alpha beta^2 gamma^2)^phi ~ 2^phi
    assert 1.2 * 1.1**2 * 1.15**2 == pytest.approx(1.92, abs=0.01)


@pytest.mark.parametrize(
    "args, name",
    [
        ((1.2, 1.1, 1.15, -1.0), "phi"),
        ((0.9, 1.1, 1.15, 1.0), "alpha"),
        ((1.2, 0.5, 1.15, 1.0), "beta"),
        ((1.2, 1.1, 0.99, 1.0), "gamma"),
        ((1.2, 1.1, 1.15, "2"), "phi"),
        ((None, 1.1, 1.15, 1.0), "alpha"),
        ((1.2, 1.1, 1.15, math.nan), "phi"),
        ((1.2, True, 1.15, 1.0), "beta"),
    ],
)
def test_compound_rule_rejects_invalid_input_naming_the_value(args, name):
    with pytest.raises(ValueError, match=name):
        compound_scaling(*args)


@pytest.mark.parametrize("phi", [12.5, 50, 1000])
def test_compound_rule_bounds_phi_before_anything_is_built(phi):
    # phi = 1000 once overflowed in torch ("Overflow when unpacking long long"); 50 allocated until OOM
    with pytest.raises(ValueError, match=r"phi must lie in \[0, 12\], got " + f"{phi:g}"):
        compound_scaling(1.2, 1.1, 1.15, phi)
    assert compound_scaling(1.2, 1.1, 1.15, 12).resolution == round(224 * 1.15**12)  # the bound itself is allowed


def test_width_scaled_network_has_scaled_stem_and_head():
    model = efficientnet(2.0, 3.1, 600, 0.5, num_classes=1000, regime="imagenet")
    assert model.features[0][0].out_channels == 64
    assert model.features[-1][0].out_channels == 2560
    assert sum(len(stage) for stage in model.features[1:-1]) == sum(math.ceil(s.repeats * 3.1) for s in B0_STAGES)
