"""Single-dimension and compound scaling at matched FLOPs."""

import pytest

from effnet.models import spec_for_name, spec_flops
from effnet.scaling import STRATEGIES, match_flops, scaled_spec

TOLERANCE = 0.10  # params.yaml scaling.tolerance


@pytest.fixture(scope="module")
def b0():
    return spec_for_name("efficientnet_b0")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_matched_flops_within_tolerance_and_one_dimension_only(b0, strategy):
    matched = match_flops(strategy, 2.0, b0, coefficients=(1.2, 1.1, 1.15))
    assert abs(matched.relative_error) <= TOLERANCE
    assert matched.flops == spec_flops(matched.spec)
    assert matched.flops / spec_flops(b0) == pytest.approx(2.0, rel=TOLERANCE)
    spec = matched.spec
    assert spec.name == f"{strategy}_2x"
    changed = {"depth": spec.depth != 1.0, "width": spec.width != 1.0, "resolution": spec.resolution != 32}
    if strategy == "compound":
        assert all(changed.values())
    else:
        assert changed == {k: k == strategy for k in changed}


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
