"""Single-dimension against compound scaling at matched FLOPs (paper Section 3.2, Figure 3, Figure 8).

B0 is scaled along one dimension (depth only, width only, resolution only) or by the
compound rule, each to a multiple of B0's FLOPs. FLOPs are a step function of the
multiplier (repeats round up, channels round to multiples of 8, resolutions are whole
pixels), so each multiplier is found by bisection on the measured FLOPs of the real
network (`effnet.models.count_flops`, the one FLOPs counter), and the nearest network is
kept; `match_flops` reports how near it came.

Fair comparison at a target: every model matched to the same FLOPs target, whatever its
strategy, gets the same regularisation (`target_dropout`): the published B0-B7 dropout
interpolated at phi = log2(target), the phi whose nominal FLOPs 2^phi equal the target,
and the base's stochastic-depth rate (`train.drop_path_rate`). Only the architecture
then differs between the strategies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from effnet.config import Params
from effnet.efficientnet import B0_STAGES, published_dropout
from effnet.models import ModelSpec, build_model, compound_spec, count_flops, network_of, published_spec
from effnet.study import scaled_name, strategy_names

STRATEGIES = strategy_names()  # study.yaml lists them
Coefficients = tuple[float, float, float]
Start = tuple[float, float, float, float]  # where bisection starts: predicted multiplier, low, high, step up


def target_dropout(target: float) -> float:
    """The dropout of every model matched to `target` x B0's FLOPs: the published rate at phi = log2(target).

    Each unit of phi doubles the nominal FLOPs (Eq. 3 under alpha beta^2 gamma^2 = 2), so
    the target 2^phi gets the dropout the paper gives a compound model at that phi
    (`published_dropout`: 0.2 at 1x and 2x, 0.259 at 3x, 0.3 at 4x and 8x, 0.4 at 16x). The same
    rate for depth-, width-, resolution- and compound-scaled models alike.
    """
    if target < 1.0:
        raise ValueError(f"a FLOPs target is a multiple of B0's FLOPs >= 1, got {target}")
    return published_dropout(math.log2(target))


@dataclass(frozen=True)
class Matched:
    spec: ModelSpec
    multiplier: float  # depth, width, resolution (pixels) or phi, per strategy
    flops: int
    target_flops: float

    @property
    def relative_error(self) -> float:
        return self.flops / self.target_flops - 1.0


def _depth(base: ModelSpec, multiplier: float, coefficients: Coefficients | None, name: str | None) -> ModelSpec:
    return replace(base, name=name or base.name, depth=base.depth * multiplier)


def _width(base: ModelSpec, multiplier: float, coefficients: Coefficients | None, name: str | None) -> ModelSpec:
    return replace(base, name=name or base.name, width=base.width * multiplier)


def _resolution(base: ModelSpec, pixels: float, coefficients: Coefficients | None, name: str | None) -> ModelSpec:
    return replace(base, name=name or base.name, resolution=int(round(pixels)))


def _compound(base: ModelSpec, phi: float, coefficients: Coefficients | None, name: str | None) -> ModelSpec:
    if coefficients is None:
        raise ValueError("compound scaling needs the (alpha, beta, gamma) coefficients")
    return compound_spec(phi, coefficients, network_of(base), name=name)


def _compound_start(base: ModelSpec, target: float, coefficients: Coefficients | None) -> Start:
    # The rule predicts FLOPs ~ (alpha beta^2 gamma^2)^phi; the real networks grow faster
    # at small phi, since ceil(repeats * depth) adds a block to every stage as soon as
    # depth > 1. FLOPs never decrease with phi, so bisection over [0, ...] finds the match.
    alpha, beta, gamma = coefficients or (0.0, 0.0, 0.0)
    growth = alpha * beta**2 * gamma**2
    predicted = math.log(target) / math.log(growth) if growth > 1 else 1.0
    return predicted, 0.0, predicted + 0.5, 0.5


def _resolution_start(base: ModelSpec, target: float, coefficients: Coefficients | None) -> Start:
    predicted = base.resolution * math.sqrt(target)  # FLOPs grow with the square of the side
    return predicted, float(base.resolution), float(math.ceil(predicted)) + 1.0, predicted


def _depth_start(base: ModelSpec, target: float, coefficients: Coefficients | None) -> Start:
    return target, 1.0, target * 1.25, target  # FLOPs grow with the number of blocks


def _width_start(base: ModelSpec, target: float, coefficients: Coefficients | None) -> Start:
    predicted = math.sqrt(target)  # FLOPs grow with the square of the channels
    return predicted, 1.0, predicted * 1.25, predicted


@dataclass(frozen=True)
class Scaling:
    """How one strategy of the study scales B0, and where `match_flops` starts bisecting its multiplier."""

    scale: Callable[[ModelSpec, float, Coefficients | None, str | None], ModelSpec]  # B0, multiplier, coeffs, name
    start: Callable[[ModelSpec, float, Coefficients | None], Start]  # B0, FLOPs target, coefficients
    whole: bool = False  # the multiplier is a whole number (pixels): bisect on integers


# One row per strategy of study.yaml (tests/test_scaling.py checks that the two agree).
SCALINGS: dict[str, Scaling] = {
    "depth": Scaling(_depth, _depth_start),
    "width": Scaling(_width, _width_start),
    "resolution": Scaling(_resolution, _resolution_start, whole=True),
    "compound": Scaling(_compound, _compound_start),  # the multiplier is phi
}


def scaling_of(strategy: str) -> Scaling:
    """The row of `SCALINGS` for `strategy`; an unknown strategy is an error that lists the known ones."""
    if strategy not in SCALINGS:
        known = ", ".join(SCALINGS)
        if strategy in strategy_names():
            raise ValueError(
                f"strategy {strategy!r} of study.yaml has no row in effnet/scaling.py SCALINGS (has: {known})"
            )
        raise ValueError(f"unknown scaling strategy {strategy!r}; allowed: {known}")
    return SCALINGS[strategy]


def scaled_spec(
    strategy: str, multiplier: float, base: ModelSpec, coefficients: Coefficients | None = None, name: str | None = None
) -> ModelSpec:
    """B0 (`base`) scaled along one strategy by `multiplier` (phi for 'compound')."""
    return scaling_of(strategy).scale(base, multiplier, coefficients, name)


def match_flops(
    strategy: str,
    target: float,
    base: ModelSpec,
    coefficients: tuple[float, float, float] | None = None,
    flops_fn: Callable[[ModelSpec], int] = count_flops,
    iterations: int = 14,
) -> Matched:
    """The `strategy`-scaled B0 whose FLOPs are nearest `target` x B0's FLOPs.

    Bisection on the multiplier (FLOPs never decrease as it grows); every network measured
    on the way is a candidate and the one nearest the target wins. Whatever the strategy,
    the matched spec gets the regularisation of its target: dropout `target_dropout(target)`
    and the base's `drop_path_rate`, so models at one target differ only in architecture.
    """
    if target < 1.0:
        raise ValueError(f"a FLOPs target is a multiple of B0's FLOPs >= 1, got {target}")
    scaling = scaling_of(strategy)
    name = scaled_name(strategy, target)
    base_flops = flops_fn(base)
    goal = target * base_flops
    cache: dict[float, tuple[ModelSpec, int]] = {}

    def measure(x: float) -> int:
        if x not in cache:
            spec = scaled_spec(strategy, x, base, coefficients, name)
            cache[x] = (spec, flops_fn(spec))
        return cache[x][1]

    predicted, low, high, step = scaling.start(base, target, coefficients)
    while measure(high) < goal:
        low, high = high, high + step
    for _ in range(iterations):
        if scaling.whole and high - low <= 1:
            break
        mid = (low + high) / 2.0
        if scaling.whole:
            mid = float(int(mid))
        if measure(mid) < goal:
            low = mid
        else:
            high = mid
    best = min(cache, key=lambda x: (abs(cache[x][1] - goal), abs(x - predicted)))
    spec, flops = cache[best]
    spec = replace(spec, dropout=target_dropout(target), drop_path_rate=base.drop_path_rate)
    return Matched(spec=spec, multiplier=best, flops=flops, target_flops=goal)


def built_multipliers(spec: ModelSpec, base: ModelSpec) -> dict[str, float]:
    """Depth, width and resolution of `spec` relative to `base` (B0) as built, after rounding.

    depth: blocks of the network over B0's blocks; width: the mean over the stem, the
    seven stages and the head of the ratio of output channels; resolution: input side
    over B0's. A nominal multiplier of 1.012 that rounds to the same channels is 1.0 here.
    """

    def layout(s: ModelSpec) -> tuple[list[int], list[int]]:
        with torch.device("meta"):
            model = build_model(s)
        stem, *stages, head = model.features
        return (
            [len(stage) for stage in stages],
            [stem[0].out_channels] + [stage[-1].block[-1][0].out_channels for stage in stages] + [head[0].out_channels],
        )

    blocks, channels = layout(spec)
    base_blocks, base_channels = layout(base)
    return {
        "depth": sum(blocks) / sum(base_blocks),
        "width": sum(c / b for c, b in zip(channels, base_channels, strict=True)) / len(channels),
        "resolution": spec.resolution / base.resolution,
    }


def changes_every_dimension(spec: ModelSpec, base: ModelSpec, minimum: float = 1.05) -> bool:
    """Whether `spec`, as built, exceeds `base` by at least `minimum` in depth, in width AND in resolution.

    A bare "differs" would be too weak: compound scaling at 2x B0 (paper coefficients, 32 px)
    adds 16 channels to the head and one pixel (width 1.001x, resolution 1.031x as built):
    a depth-scaled network in all but name.
    """
    built = built_multipliers(spec, base)
    return all(built[k] >= minimum for k in ("depth", "width", "resolution"))


def study_spec(
    strategy: str,
    target: float | None,
    params: Params,
    coefficients: tuple[float, float, float] | None = None,
    log: Callable[[str], object] = print,
) -> tuple[ModelSpec, dict[str, float | str]]:
    """The spec of one model of the scaling study (stages `scale_*`) and its `matched` record.

    'baseline' is B0 itself; any other strategy is B0 matched to `target` x its FLOPs
    (`match_flops`), which must come within `scaling.tolerance`; a compound model must also
    exceed B0 by `scaling.min_change` in built depth, width and resolution (`changes_every_dimension`),
    else a ValueError says so. Every model at a target gets
    that target's regularisation: dropout `target_dropout` and stochastic depth
    `train.drop_path_rate`. The record holds the FLOPs reached and the depth, width and
    resolution multipliers as built (after rounding), beside dropout and drop-path rate.
    """
    # one regularisation per FLOPs target (target_dropout): B0's is that of 1x
    b0 = replace(
        published_spec("b0", params.network), dropout=target_dropout(1.0), drop_path_rate=params.train.drop_path_rate
    )
    if strategy == "baseline":
        spec, extra = (
            b0,
            {
                "strategy": "baseline",
                "target": 1.0,
                "flops_ratio": 1.0,
                "flops": count_flops(b0),
                "depth": 1.0,
                "width": 1.0,
                "resolution": 1.0,
            },
        )
    else:
        if target is None:
            raise ValueError(f"--strategy {strategy} needs --target, a multiple of B0's FLOPs (scaling.flops_targets)")
        tolerance = params.scaling.tolerance
        matched = match_flops(strategy, target, b0, coefficients)
        if abs(matched.relative_error) > tolerance:
            raise ValueError(
                f"{strategy} scaling gets no nearer than "
                f"{matched.flops / (matched.target_flops / target):.2f}x "
                f"B0's FLOPs to the target {target:g}x (scaling.tolerance {tolerance:g}); "
                "raise scaling.tolerance or choose another target"
            )
        spec = matched.spec
        built = built_multipliers(spec, b0)  # as built, after rounding: what the network really changed
        minimum = params.scaling.min_change
        if strategy == "compound" and not changes_every_dimension(spec, b0, 1.0 + minimum):
            raise ValueError(
                f"the compound model at {target:g}x B0's FLOPs is not compound as built: depth "
                f"{built['depth']:.3f}x, width {built['width']:.3f}x, "
                f"resolution {built['resolution']:.3f}x, "
                f"not all >= {1 + minimum:g}x (scaling.min_change {minimum:g}); choose another "
                "scaling.flops_targets (python scripts/search_targets.py lists what each target builds)"
            )
        extra = {
            "strategy": strategy,
            "target": target,
            "multiplier": matched.multiplier,
            "flops_ratio": target * (1 + matched.relative_error),
            "flops": matched.flops,
            **built,
        }
        what = f"{matched.multiplier:.0f} px" if scaling_of(strategy).whole else f"multiplier {matched.multiplier:.4g}"
        log(
            f"{spec.name}: {strategy} {what} "
            f"gives {extra['flops_ratio']:.3f}x B0's FLOPs; "
            f"built depth {built['depth']:.3f}x, width {built['width']:.3f}x, resolution {built['resolution']:.3f}x"
        )
    extra.update(dropout=spec.dropout, drop_path_rate=spec.drop_path_rate)
    return spec, extra


def reachable(
    strategy: str,
    base: ModelSpec,
    max_ratio: float,
    coefficients: tuple[float, float, float] | None = None,
    step: float = 0.01,
    flops_fn: Callable[[ModelSpec], int] = count_flops,
) -> list[tuple[float, float]]:
    """The FLOPs ratios (to `base`) of the distinct networks `strategy` builds up to `max_ratio`: (multiplier, ratio).

    The list runs 5% past `max_ratio`, so that a target at `max_ratio` can also be matched from above.

    FLOPs are a step function of the multiplier, so this lists what one strategy can build:
    depth at every multiplier where a stage gains a block (k / repeats of a row of Table 1),
    resolution at every whole pixel, width and compound (phi) in `step`s, each network
    measured. `equal_cost_targets` picks from these the FLOPs targets every strategy can hit.
    """
    base_flops = flops_fn(base)
    if strategy == "depth":
        repeats = {stage.repeats for stage in B0_STAGES}
        top = max_ratio * 1.05
        grid = sorted({1.0} | {k / r for r in repeats for k in range(r + 1, int(math.ceil(r * top)) + 1)})
    elif strategy == "resolution":
        grid = [float(x) for x in range(base.resolution, int(base.resolution * math.sqrt(max_ratio * 1.1)) + 2)]
    else:
        start = 0.0 if strategy == "compound" else 1.0
        grid = [start + i * step for i in range(100_000)]
    out: dict[int, float] = {}
    for x in grid:
        flops = flops_fn(scaled_spec(strategy, x, base, coefficients))
        if flops / base_flops > max_ratio * 1.05:
            break
        out.setdefault(flops, x)
    return sorted(((x, flops / base_flops) for flops, x in out.items()), key=lambda t: t[1])


def equal_cost_targets(
    ratios: dict[str, list[float]], candidates: list[float], tolerance: float
) -> list[dict[str, float]]:
    """Of `candidates` (multiples of B0's FLOPs), those that every strategy reaches within `tolerance` (relative).

    `ratios` maps each strategy to the FLOPs ratios it can build (`reachable`). One row per
    target that every strategy can hit: the target and each strategy's nearest ratio.
    """
    rows = []
    for target in candidates:
        nearest = {s: min(r, key=lambda v: abs(v / target - 1.0)) for s, r in ratios.items()}
        if all(abs(v / target - 1.0) <= tolerance for v in nearest.values()):
            rows.append({"target": target, **nearest})
    return rows
