"""Single-dimension and compound scaling at matched FLOPs."""

import dataclasses
import math

import pytest

from effnet.config import PAPER_COEFFICIENTS, Params, ScalingConfig
from effnet.models import count_flops, spec_for_name
from effnet.scaling import (
    STRATEGIES,
    built_multipliers,
    changes_every_dimension,
    equal_cost_targets,
    match_flops,
    reachable,
    scaled_spec,
    study_spec,
    target_dropout,
)
from effnet.study import SCALING_COEFFICIENTS

TOLERANCE = 0.10  # of the matches at 2x below (not a default target)


@pytest.fixture(scope="module")
def b0():
    return spec_for_name("efficientnet_b0")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_matched_flops_within_tolerance_and_one_dimension_only(b0, strategy):
    matched = match_flops(strategy, 2.0, b0, coefficients=(1.2, 1.1, 1.15))
    assert abs(matched.relative_error) <= TOLERANCE
    assert matched.flops == count_flops(matched.spec)
    assert matched.flops / count_flops(b0) == pytest.approx(2.0, rel=TOLERANCE)
    spec = matched.spec
    assert spec.name == f"{strategy}_2x"
    changed = {"depth": spec.depth != 1.0, "width": spec.width != 1.0, "resolution": spec.resolution != 32}
    if strategy == "compound":
        assert all(changed.values())
    else:
        assert changed == {k: k == strategy for k in changed}


@pytest.mark.slow  # about 30 s per target on a quiet core (60 real networks counted), minutes under load
@pytest.mark.parametrize("target", ScalingConfig().flops_targets)
def test_default_targets_are_equal_cost_and_the_compound_model_is_compound(b0, target):
    """At every default target every strategy lands within scaling.tolerance (2%) of the same FLOPs, and the
    compound model (the paper's coefficients) changes depth, width and resolution by >= scaling.min_change."""
    cfg = ScalingConfig()
    assert SCALING_COEFFICIENTS == PAPER_COEFFICIENTS
    ratios = {}
    for strategy in STRATEGIES:
        matched = match_flops(strategy, target, b0, coefficients=SCALING_COEFFICIENTS)
        assert abs(matched.relative_error) <= cfg.tolerance == 0.02, (strategy, matched.relative_error)
        ratios[strategy] = matched.flops / count_flops(b0)
        if strategy == "compound":
            built = built_multipliers(matched.spec, b0)
            assert changes_every_dimension(matched.spec, b0, 1 + cfg.min_change), built
            assert all(v >= 1.05 for v in built.values())
    assert max(ratios.values()) / min(ratios.values()) - 1 <= 2 * cfg.tolerance


def test_the_study_stops_on_a_compound_model_that_is_not_compound():
    params = Params(scaling=ScalingConfig(flops_targets=(2.0,), tolerance=0.05))  # at 2x: B0 one block deeper
    with pytest.raises(ValueError, match=r"not compound as built: depth 1.438x, width 1.001x, resolution 1.031x"):
        study_spec("compound", 2.0, params, SCALING_COEFFICIENTS, log=lambda _: None)
    with pytest.raises(ValueError, match="scaling.tolerance"):  # and 4x is not an equal-cost target (3.76x at best)
        study_spec("compound", 4.0, Params(), SCALING_COEFFICIENTS, log=lambda _: None)


def test_equal_cost_targets_on_step_functions():
    ratios = {"depth": [1.0, 2.0, 3.05, 4.5], "width": [1.0, 1.9, 3.0, 4.0], "compound": [1.0, 2.1, 2.97, 3.5]}
    rows = equal_cost_targets(ratios, [2.0, 3.0, 4.0], tolerance=0.02)
    assert rows == [{"target": 3.0, "depth": 3.05, "width": 3.0, "compound": 2.97}]  # 2x: 1.9 is 5% off; 4x: 4.5
    assert equal_cost_targets(ratios, [2.0, 3.0, 4.0], tolerance=0.06)[0]["target"] == 2.0


def test_reachable_lists_each_distinct_network_once(b0):
    nominal = lambda s: int(1e6 * math.ceil(s.depth * 4) / 4 * s.resolution**2)  # noqa: E731  steps in depth and pixels
    depth = reachable("depth", b0, 2.0, flops_fn=nominal)
    assert [round(r, 4) for _, r in depth] == [1.0, 1.25, 1.5, 1.75, 2.0]  # one per new block of the 4-block stage
    resolution = reachable("resolution", b0, 1.3, flops_fn=nominal)
    # up to 5% past max_ratio, so that a target at max_ratio can be matched from above: 37 px is 1.34x, 38 px 1.41x
    assert [x for x, _ in resolution] == [32.0, 33.0, 34.0, 35.0, 36.0, 37.0]
    # strict=False: neighbouring pairs, the shifted copy is one shorter by design
    assert all(a[1] < b[1] for a, b in zip(resolution, resolution[1:], strict=False))


def test_compound_at_2x_is_a_depth_scaled_network(b0):
    # why 2x is not a default target: width and resolution barely move once rounded
    matched = match_flops("compound", 2.0, b0, coefficients=(1.2, 1.1, 1.15))
    built = built_multipliers(matched.spec, b0)
    assert built["depth"] == pytest.approx(23 / 16)  # one more block in every one of the 7 stages
    assert built["width"] < 1.01 and matched.spec.resolution == 33
    assert not changes_every_dimension(matched.spec, b0)


def test_built_multipliers_of_b0_itself(b0):
    assert built_multipliers(b0, b0) == {"depth": 1.0, "width": 1.0, "resolution": 1.0}


@pytest.mark.parametrize("target", [1.0, 2.0, 4.0, 8.0, 16.0])
def test_every_model_at_a_target_has_the_same_regularisation(b0, target):
    # a smooth stand-in for the FLOPs (the rule does not depend on them), so every target is quick
    nominal = lambda s: int(1e6 * s.depth * s.width**2 * s.resolution**2)  # noqa: E731
    base = dataclasses.replace(b0, drop_path_rate=0.13)
    specs = [
        match_flops(strategy, target, base, coefficients=(1.2, 1.1, 1.15), flops_fn=nominal).spec
        for strategy in STRATEGIES
    ]
    assert {s.dropout for s in specs} == {target_dropout(target)}
    assert {s.drop_path_rate for s in specs} == {0.13}


def test_target_dropout_is_the_published_rate_at_log2_target():
    # published B0..B4: 0.2, 0.2, 0.3, 0.3, 0.4; 3x lies at phi = log2(3) = 1.585 between B1 and B2
    assert [target_dropout(t) for t in (1, 2, 3, 4, 8, 16)] == pytest.approx(
        [0.2, 0.2, 0.2585, 0.3, 0.3, 0.4], abs=1e-4
    )
    with pytest.raises(ValueError, match=">= 1"):
        target_dropout(0.5)


def test_larger_target_resolution(b0):
    matched = match_flops("resolution", 8.0, b0)
    assert abs(matched.relative_error) <= TOLERANCE and matched.spec.resolution == 89


def test_search_on_a_step_function():
    # FLOPs as a step function of the multiplier: the nearest step wins, whatever side it lies
    base = spec_for_name("efficientnet_b0")
    fake = lambda spec: 100 if spec.depth == 1.0 else 100 * int(spec.depth * 2) // 2 + 10  # noqa: E731
    matched = match_flops("depth", 3.0, base, flops_fn=fake)
    assert matched.flops == 310 and matched.spec.depth == pytest.approx(3.0, abs=0.5)


def test_unknown_strategy_and_missing_coefficients(b0):
    with pytest.raises(ValueError, match="depth, width, resolution, compound"):
        scaled_spec("height", 2.0, b0)
    with pytest.raises(ValueError, match="coefficients"):
        scaled_spec("compound", 1.0, b0)
    with pytest.raises(ValueError, match=">= 1"):
        match_flops("width", 0.5, b0)


def test_every_strategy_of_the_study_has_its_scaling_row(b0, monkeypatch):
    from effnet import scaling, study

    assert list(scaling.SCALINGS) == list(study.strategy_names())  # one row each, in study.yaml's order
    monkeypatch.delitem(scaling.SCALINGS, "width")  # a strategy of study.yaml without its row
    with pytest.raises(ValueError, match="'width' of study.yaml has no row in effnet/scaling.py SCALINGS"):
        scaled_spec("width", 2.0, b0)
