"""EfficientNet as the paper builds it (Tan & Le, 2019), with the architecture held as data.

- `B0_STAGES` is Table 1: one frozen row per MBConv stage, unscaled.
- `scale_channels`, `scale_repeats` and `scale_stages` are pure functions from
  (rows, width, depth) to rows; the stem (32) and head (1280) scale like every stage.
- `PUBLISHED` is the B0-B7 table of (width, depth, resolution, dropout) from the paper's
  released code; `compound_scaling` is the compound rule of Eq. 3 for any real phi.
- `EfficientNet` builds the network from scaled rows. The `cifar` regime only changes
  strides (see `cifar_strides`); everything else is the ImageNet network.

The layer ops are torchvision's (`Conv2dNormActivation`, `SqueezeExcitation`,
`StochasticDepth`), so in the `imagenet` regime the parameter counts equal torchvision's
`efficientnet_b0`..`b7` exactly; a test checks that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from numbers import Real

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation, StochasticDepth

from effnet.config import MAX_PHI


@dataclass(frozen=True)
class MBConvStage:
    """One row of the paper's Table 1: `repeats` MBConv blocks, the first with `stride`."""

    expand_ratio: int
    kernel: int
    stride: int
    out_channels: int
    repeats: int


# Table 1, stages 2-8 (stage 1 is the stem, stage 9 the head).
B0_STAGES: tuple[MBConvStage, ...] = (
    MBConvStage(expand_ratio=1, kernel=3, stride=1, out_channels=16, repeats=1),
    MBConvStage(expand_ratio=6, kernel=3, stride=2, out_channels=24, repeats=2),
    MBConvStage(expand_ratio=6, kernel=5, stride=2, out_channels=40, repeats=2),
    MBConvStage(expand_ratio=6, kernel=3, stride=2, out_channels=80, repeats=3),
    MBConvStage(expand_ratio=6, kernel=5, stride=1, out_channels=112, repeats=3),
    MBConvStage(expand_ratio=6, kernel=5, stride=2, out_channels=192, repeats=4),
    MBConvStage(expand_ratio=6, kernel=3, stride=1, out_channels=320, repeats=1),
)
B0_STEM_CHANNELS = 32  # Table 1, stage 1: Conv3x3, stride 2
B0_HEAD_CHANNELS = 1280  # Table 1, stage 9: Conv1x1 & Pooling & FC
B0_RESOLUTION = 224

# BatchNorm as in the paper's TensorFlow code: decay 0.99 (PyTorch momentum 0.01), eps 1e-3.
BATCHNORM = partial(nn.BatchNorm2d, momentum=0.01, eps=1e-3)


@dataclass(frozen=True)
class Variant:
    """A published EfficientNet: width and depth multipliers, resolution, dropout."""

    width: float
    depth: float
    resolution: int
    dropout: float


# The B0-B7 table of the paper's released code (efficientnet_builder.py); the paper's
# Section 4 gives B1-B7 only as phi = 1..7 of the compound rule, rounded by the authors.
PUBLISHED: dict[str, Variant] = {
    "b0": Variant(1.0, 1.0, 224, 0.2),
    "b1": Variant(1.0, 1.1, 240, 0.2),
    "b2": Variant(1.1, 1.2, 260, 0.3),
    "b3": Variant(1.2, 1.4, 300, 0.3),
    "b4": Variant(1.4, 1.8, 380, 0.4),
    "b5": Variant(1.6, 2.2, 456, 0.4),
    "b6": Variant(1.8, 2.6, 528, 0.5),
    "b7": Variant(2.0, 3.1, 600, 0.5),
}


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of `divisor`, never more than 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def scale_channels(channels: int, width: float) -> int:
    """Width scaling (Eq. 3): channels x width, rounded to a multiple of 8."""
    return _make_divisible(channels * width)


def scale_repeats(repeats: int, depth: float) -> int:
    """Depth scaling (Eq. 3): layers x depth, rounded up."""
    return int(math.ceil(repeats * depth))


def scale_stages(stages: Sequence[MBConvStage], width: float, depth: float) -> tuple[MBConvStage, ...]:
    """Scale every row's channels by `width` and repeats by `depth`; other fields unchanged."""
    return tuple(
        replace(s, out_channels=scale_channels(s.out_channels, width), repeats=scale_repeats(s.repeats, depth))
        for s in stages
    )


def cifar_strides(stages: Sequence[MBConvStage], downsample: int) -> tuple[int, tuple[MBConvStage, ...]]:
    """Stem stride and rows for 32x32 inputs (a departure from the paper, for CIFAR).

    The ImageNet network downsamples 32x (224 -> 7). On 32x32 that would leave 1x1 maps,
    so, as the CIFAR ResNets do with their stem, the stem's stride becomes 1 (16x in
    total) and, for `downsample=8`, so does the first stride-2 stage (32 -> 4x4, the
    final map size of CIFAR ResNets). Channels, kernels and repeats are untouched.
    """
    if downsample not in (8, 16):
        raise ValueError(f"cifar downsample must be 8 or 16, got {downsample!r}")
    stages = tuple(stages)
    if downsample == 8:
        first = next(i for i, s in enumerate(stages) if s.stride == 2)
        stages = stages[:first] + (replace(stages[first], stride=1),) + stages[first + 1 :]
    return 1, stages


@dataclass(frozen=True)
class CompoundScaling:
    """Multipliers of the compound rule at one phi (Eq. 3), and the resolution they give."""

    depth: float  # alpha ** phi
    width: float  # beta ** phi
    resolution: int  # round(base_resolution * gamma ** phi)


def _check_coefficient(name: str, value: object, minimum: float, maximum: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value > maximum:
        raise ValueError(
            f"{name} must lie in [{minimum:g}, {maximum:g}], got {value:g}: phi = {maximum:g} is already "
            f"{2**maximum:g}x B0's FLOPs"
        )
    if value < minimum:
        why = (
            "phi counts doublings of compute and cannot be negative"
            if name == "phi"
            else (f"{name} multiplies a dimension per unit of phi; below 1 that dimension would shrink")
        )
        raise ValueError(f"{name} must be >= {minimum:g}, got {value:g}: {why}")
    return value


def compound_scaling(
    alpha: float, beta: float, gamma: float, phi: float, base_resolution: int = B0_RESOLUTION
) -> CompoundScaling:
    """The compound scaling rule, paper Eq. 3: depth alpha^phi, width beta^phi, resolution gamma^phi.

    FLOPs grow about (alpha * beta^2 * gamma^2)^phi, i.e. 2^phi under the paper's constraint.
    Raises ValueError naming the offending value and the allowed range for phi outside
    [0, MAX_PHI], a coefficient < 1 or a non-number.
    """
    alpha = _check_coefficient("alpha", alpha, 1.0)
    beta = _check_coefficient("beta", beta, 1.0)
    gamma = _check_coefficient("gamma", gamma, 1.0)
    phi = _check_coefficient("phi", phi, 0.0, MAX_PHI)
    if isinstance(base_resolution, bool) or not isinstance(base_resolution, int) or base_resolution < 1:
        raise ValueError(f"base_resolution must be a positive integer, got {base_resolution!r}")
    return CompoundScaling(depth=alpha**phi, width=beta**phi, resolution=int(round(base_resolution * gamma**phi)))


def published_dropout(phi: float) -> float:
    """Dropout for a compound-scaled model: the published B0-B7 rates, linearly interpolated in phi.

    The paper raises dropout from 0.2 (B0) to 0.5 (B7) with size; for a real phi we
    interpolate between neighbouring integers and hold 0.5 beyond B7.
    """
    rates = [v.dropout for v in PUBLISHED.values()]
    phi = min(max(phi, 0.0), len(rates) - 1.0)
    low = int(math.floor(phi))
    high = min(low + 1, len(rates) - 1)
    return rates[low] + (rates[high] - rates[low]) * (phi - low)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation (Sandler et al., 2018; Hu et al., 2018).

    Stochastic depth (Huang et al., 2016) drops the whole residual branch per sample; the
    paper's code calls it "drop connect", which is a different method (Wan et al., 2013).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: int,
        kernel: int,
        stride: int,
        drop_path: float,
        norm_layer: Callable[..., nn.Module] = BATCHNORM,
    ) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_channels == out_channels
        expanded = in_channels * expand_ratio
        layers: list[nn.Module] = []
        # expand
        if expanded != in_channels:
            layers.append(
                Conv2dNormActivation(
                    in_channels, expanded, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.SiLU
                )
            )
        # depthwise
        layers.append(
            Conv2dNormActivation(
                expanded,
                expanded,
                kernel_size=kernel,
                stride=stride,
                groups=expanded,
                norm_layer=norm_layer,
                activation_layer=nn.SiLU,
            )
        )
        # squeeze and excitation: bottleneck of a quarter of the block's *input* channels
        layers.append(SqueezeExcitation(expanded, max(1, in_channels // 4), activation=nn.SiLU))
        # project (linear bottleneck: no activation)
        layers.append(
            Conv2dNormActivation(expanded, out_channels, kernel_size=1, norm_layer=norm_layer, activation_layer=None)
        )
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop_path, "row") if self.use_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_residual:
            out = self.stochastic_depth(out) + x
        return out


class EfficientNet(nn.Module):
    """The network of Table 1 from already-scaled rows.

    `resolution` is the input size the model was scaled for; it does not change the
    layers (the network is fully convolutional) but the data loader resizes to it.
    """

    def __init__(
        self,
        stages: Sequence[MBConvStage],
        stem_channels: int,
        head_channels: int,
        *,
        resolution: int,
        num_classes: int = 1000,
        dropout: float = 0.2,
        drop_path_rate: float = 0.2,
        stem_stride: int = 2,
        norm_layer: Callable[..., nn.Module] = BATCHNORM,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        layers: list[nn.Module] = [
            Conv2dNormActivation(
                3, stem_channels, kernel_size=3, stride=stem_stride, norm_layer=norm_layer, activation_layer=nn.SiLU
            )
        ]
        num_blocks = sum(s.repeats for s in stages)
        block_idx, in_channels = 0, stem_channels
        for stage in stages:
            blocks: list[nn.Module] = []
            for i in range(stage.repeats):
                # stochastic depth rises linearly over blocks (paper code: rate * idx / num_blocks)
                drop_path = drop_path_rate * block_idx / num_blocks
                blocks.append(
                    MBConv(
                        in_channels,
                        stage.out_channels,
                        stage.expand_ratio,
                        stage.kernel,
                        stage.stride if i == 0 else 1,
                        drop_path,
                        norm_layer,
                    )
                )
                in_channels = stage.out_channels
                block_idx += 1
            layers.append(nn.Sequential(*blocks))
        layers.append(
            Conv2dNormActivation(
                in_channels, head_channels, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.SiLU
            )
        )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(head_channels, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # as the paper's code and torchvision: He init (fan out) for convolutions, uniform for the classifier
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, head_channels, H', W')
        x = torch.flatten(self.avgpool(x), 1)  # (B, head_channels)
        return self.classifier(x)  # (B, num_classes)


def efficientnet(
    width: float,
    depth: float,
    resolution: int,
    dropout: float,
    *,
    num_classes: int = 1000,
    regime: str = "imagenet",
    cifar_downsample: int = 8,
    drop_path_rate: float = 0.2,
) -> EfficientNet:
    """B0 scaled by (width, depth), built for `resolution` in the given input regime."""
    stages = scale_stages(B0_STAGES, width, depth)
    if regime == "imagenet":
        stem_stride = 2
    elif regime == "cifar":
        stem_stride, stages = cifar_strides(stages, cifar_downsample)
    else:
        raise ValueError(f"regime must be 'imagenet' or 'cifar', got {regime!r}")
    return EfficientNet(
        stages,
        scale_channels(B0_STEM_CHANNELS, width),
        scale_channels(B0_HEAD_CHANNELS, width),
        resolution=resolution,
        num_classes=num_classes,
        dropout=dropout,
        drop_path_rate=drop_path_rate,
        stem_stride=stem_stride,
    )
