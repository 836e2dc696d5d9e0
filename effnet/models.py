"""One entry point for every network the stages train: EfficientNets and the baselines.

A `ModelSpec` is everything needed to rebuild a network (it is saved beside the weights):
the architecture, the EfficientNet multipliers, the input resolution, the regime. Specs
come from names (`spec_for_name`), from the compound rule (`compound_spec`), or from the
scaling study; `build_model` turns a spec into an `nn.Module` with a `.resolution`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torchvision import models as tv

from effnet import study
from effnet.config import NetworkConfig
from effnet.efficientnet import B0_RESOLUTION, PUBLISHED, compound_scaling, efficientnet, published_dropout

REGIMES = ("cifar", "imagenet")


@dataclass(frozen=True)
class ModelSpec:
    """A buildable network, its regularisation included. For baselines `width`, `depth`, `dropout` and
    `drop_path_rate` are unused."""

    name: str  # e.g. efficientnet_b3, efficientnet_phi2.5, width_4x, resnet50
    arch: str  # 'efficientnet' or a baseline's torchvision builder (study.yaml baselines)
    resolution: int  # input side the network is trained and evaluated at
    regime: str = "cifar"
    cifar_downsample: int = 8
    num_classes: int = 100
    width: float = 1.0
    depth: float = 1.0
    dropout: float = 0.2  # before the classifier
    drop_path_rate: float = 0.2  # stochastic depth of the last block, linear over blocks (paper: survival 0.8)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(**d)


def _base_resolution(net: NetworkConfig) -> int:
    if net.regime not in REGIMES:
        raise ValueError(f"regime must be one of {', '.join(REGIMES)}, got {net.regime!r}")
    return B0_RESOLUTION if net.regime == "imagenet" else net.base_resolution


def network_of(spec: ModelSpec) -> NetworkConfig:
    """The `network:` settings `spec` was built under, its resolution as the base resolution."""
    return NetworkConfig(
        regime=spec.regime,
        cifar_downsample=spec.cifar_downsample,
        base_resolution=spec.resolution,
        num_classes=spec.num_classes,
    )


def published_spec(variant: str, net: NetworkConfig = NetworkConfig()) -> ModelSpec:
    """B0-B7 from the published table; on CIFAR the resolution is scaled by the same ratio to 224."""
    if variant not in PUBLISHED:
        raise ValueError(f"unknown EfficientNet variant {variant!r}; allowed: {', '.join(PUBLISHED)}")
    v = PUBLISHED[variant]
    return ModelSpec(
        name=f"efficientnet_{variant}",
        arch="efficientnet",
        resolution=int(round(v.resolution * _base_resolution(net) / B0_RESOLUTION)),
        regime=net.regime,
        cifar_downsample=net.cifar_downsample,
        num_classes=net.num_classes,
        width=v.width,
        depth=v.depth,
        dropout=v.dropout,
    )


def compound_spec(
    phi: float,
    coefficients: tuple[float, float, float],
    net: NetworkConfig = NetworkConfig(),
    *,
    name: str | None = None,
) -> ModelSpec:
    """B0 compound-scaled at `phi` by (alpha, beta, gamma) (Eq. 3); dropout follows `published_dropout`."""
    alpha, beta, gamma = coefficients
    s = compound_scaling(alpha, beta, gamma, phi, _base_resolution(net))
    return ModelSpec(
        name=name or f"efficientnet_phi{phi:g}",
        arch="efficientnet",
        resolution=s.resolution,
        regime=net.regime,
        cifar_downsample=net.cifar_downsample,
        num_classes=net.num_classes,
        width=s.width,
        depth=s.depth,
        dropout=published_dropout(phi),
    )


def baseline_spec(arch: str, net: NetworkConfig = NetworkConfig()) -> ModelSpec:
    """A baseline of the study (study.yaml baselines) at B0's input resolution."""
    if arch not in {m.arch for m in study.BASELINES}:
        raise ValueError(f"unknown baseline {arch!r}; allowed: {', '.join(m.arch for m in study.BASELINES)}")
    return ModelSpec(
        name=arch, arch=arch, resolution=_base_resolution(net), regime=net.regime, num_classes=net.num_classes
    )


def spec_for_name(
    name: str, net: NetworkConfig = NetworkConfig(), coefficients: tuple[float, float, float] | None = None
) -> ModelSpec:
    """The spec of a matrix model of the study (effnet/study.py), under `network:` of params.yaml.

    `efficientnet_bN` is B0 compound-scaled at phi = N by `coefficients` when they are
    given (the searched ones, `study.searched_coefficients`), else the published table's bN.
    """
    entry = study.find(name, study.matrix())
    if entry is None:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(study.model_names())}")
    if entry.is_baseline:
        return dataclasses.replace(baseline_spec(entry.arch, net), name=name)
    if coefficients is None:
        return published_spec(entry.variant, net)
    return compound_spec(float(entry.variant[1:]), coefficients, net, name=name)


def _cifar_resnet(model: tv.ResNet) -> tv.ResNet:
    # The stem of the strong CIFAR ResNets (He et al., 2016, Sec. 4.2): 3x3 stride-1, no max-pool.
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def _cifar_densenet(model: tv.DenseNet) -> tv.DenseNet:
    # Same adaptation for DenseNet (Huang et al., 2017, CIFAR variant): 3x3 stride-1 stem, no pooling.
    model.features.conv0 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.features.conv0.weight)
    model.features.pool0 = nn.Identity()
    return model


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the network of `spec` (randomly initialised) with `.resolution` and `.spec` set.

    The spec carries its dropout and stochastic-depth rate, so the spec saved beside the
    weights describes the regularisation the network was trained with.
    """
    if spec.regime not in REGIMES:
        raise ValueError(f"regime must be one of {', '.join(REGIMES)}, got {spec.regime!r}")
    if spec.arch == "efficientnet":
        model: nn.Module = efficientnet(
            spec.width,
            spec.depth,
            spec.resolution,
            spec.dropout,
            num_classes=spec.num_classes,
            regime=spec.regime,
            cifar_downsample=spec.cifar_downsample,
            drop_path_rate=spec.drop_path_rate,
        )
    elif spec.arch in {m.arch for m in study.BASELINES}:
        # a baseline of the study: torchvision's builder of that name, with the CIFAR stem of its family
        model = getattr(tv, spec.arch)(weights=None, num_classes=spec.num_classes)
        if spec.regime == "cifar" and isinstance(model, tv.ResNet):
            model = _cifar_resnet(model)
        elif spec.regime == "cifar" and isinstance(model, tv.DenseNet):
            model = _cifar_densenet(model)
    else:
        raise ValueError(
            f"unknown architecture {spec.arch!r}; allowed: efficientnet, "
            f"{', '.join(m.arch for m in study.BASELINES)} (study.yaml baselines)"
        )
    model.resolution = spec.resolution
    model.spec = spec
    return model


def set_bn_momentum(model: nn.Module, momentum: float | None) -> nn.Module:
    """Set the running-statistics momentum of every BatchNorm layer of `model` (None: leave it)."""
    if momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = momentum
    return model


def last_conv_stage(model: nn.Module) -> nn.Module:
    """The last convolutional stage, whose activations Grad-CAM weighs (paper Figure 7): the study's
    `cam_layer` of the network's architecture (effnet/study.py)."""
    return model.get_submodule(study.cam_layer_of(model.spec.arch))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The operators whose multiply-adds count: convolutions and the matrix products of linear layers.
_COUNTED_OPS = frozenset({"aten.convolution", "aten._convolution", "aten.mm", "aten.addmm"})


def count_flops(model_or_spec: nn.Module | ModelSpec, resolution: int | None = None) -> int:
    """Multiply-adds of one forward pass of one image, as the paper counts FLOPs: the project's ONE FLOPs counter.

    Counts convolutions (every one: stem, expansion, depthwise, squeeze-and-excitation
    1x1s, projection, head) and linear layers (the classifier), and nothing else:
    BatchNorm, activations, pooling and additions are left out, as in the paper's
    Table 2 (B0 on ImageNet: 0.386 G here against the paper's 0.39 B). torch's own
    `FlopCounterMode` measures the operators (it counts 2 FLOPs per multiply-add, hence
    the halving), so this runs on the bare GPU machine, which has no fvcore.

    `model_or_spec`: a `ModelSpec`, or a network; one built by `build_model` (it carries
    `.spec`) is rebuilt and counted on the meta device (no memory, no compute, ~0.1 s),
    any other module is run once on its own device. `resolution`: the input side
    (default: the spec's or model's own).
    """
    from torch.utils.flop_counter import FlopCounterMode  # looked up at call time, so a test can watch it

    spec = model_or_spec if isinstance(model_or_spec, ModelSpec) else getattr(model_or_spec, "spec", None)
    if spec is not None:
        resolution = resolution or spec.resolution
        with torch.device("meta"):
            model = build_model(spec).eval()
            x = torch.zeros(1, 3, resolution, resolution)
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(x)
    else:
        model = model_or_spec
        resolution = resolution or model.resolution
        x = torch.zeros(1, 3, resolution, resolution, device=next(model.parameters()).device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(x)
        finally:
            model.train(was_training)
    counts = counter.get_flop_counts().get("Global", {})
    return sum(int(n) for op, n in counts.items() if str(op) in _COUNTED_OPS) // 2


def architecture(model_or_spec: nn.Module | ModelSpec) -> str:
    """A canonical key of the network as built: two specs with the same key build the same network.

    For an EfficientNet: the input resolution, the stem's channels, every stage's
    (blocks x output channels) and the head's channels, read from the built network
    (after the rounding of repeats and channels), e.g. 'r37_s32_16x2_24x3_..._h1280'.
    Specs that differ only in their multipliers (say depth 1.1 and 1.2, which round to the
    same repeats) share a key. Baselines: their name and resolution. Dropout and drop-path
    rate are not part of it (they are set by the caller's rule, see `effnet.scaling`).
    """
    spec = model_or_spec if isinstance(model_or_spec, ModelSpec) else model_or_spec.spec
    if spec.arch != "efficientnet":
        return f"{spec.arch}_r{spec.resolution}"
    with torch.device("meta"):
        model = build_model(spec)
    stem, *stages, head = model.features
    parts = [f"r{spec.resolution}", f"s{stem[0].out_channels}"]
    parts += [f"{len(stage)}x{stage[-1].block[-1][0].out_channels}" for stage in stages]
    parts.append(f"h{head[0].out_channels}")
    return "_".join(parts)


def describe(spec: ModelSpec) -> dict[str, Any]:
    """Parameters and FLOPs (`count_flops`) of a spec, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = build_model(spec)
    return {
        "name": spec.name,
        "regime": spec.regime,
        "resolution": spec.resolution,
        "params": count_parameters(model),
        "flops": count_flops(spec),
    }
