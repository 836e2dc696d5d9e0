"""Paired bootstrap and McNemar's test against cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from effnet.stats import bootstrap_differences, mcnemar, paired_bootstrap


def test_a_model_against_itself_is_exactly_zero_and_p_one() -> None:
    rng = np.random.default_rng(1)
    for seeds in (1, 3):
        correct = rng.random((seeds, 500)) < 0.6
        result = paired_bootstrap(correct, correct.copy())
        assert (result.difference, result.low, result.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)
        assert not result.distinguishable and result.seeds == (seeds, seeds) and result.images == 500


def test_two_images_one_seed_matches_the_enumerated_bootstrap() -> None:
    """A right on image 1 only, B on neither: a resample holds image 1 k times, k ~ Binomial(2, 1/2),
    so the difference is k / 2: 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4."""
    a, b = np.array([1, 0]), np.array([0, 0])
    differences = bootstrap_differences(a, b, resamples=20_000, seed=3)
    values, counts = np.unique(differences, return_counts=True)
    assert values.tolist() == [0.0, 0.5, 1.0]
    np.testing.assert_allclose(counts / counts.sum(), [0.25, 0.5, 0.25], atol=0.015)  # 3 sigma at 20,000 draws
    result = paired_bootstrap(a, b, resamples=20_000)
    assert (result.difference, result.low, result.high) == (0.5, 0.0, 1.0)  # 2.5% and 97.5% quantiles
    assert result.p_value == 1.0  # one discordant image: 2 * P(X <= 0) = 2 * 1/2, capped


def test_seeds_are_resampled_too() -> None:
    """One image, two paired seeds: A right with seed 0 only, B never. The image draw is fixed, the
    seed draw picks seed 0 j times, j ~ Binomial(2, 1/2): differences 0, 1/2, 1 with 1/4, 1/2, 1/4."""
    a, b = np.array([[1], [0]]), np.array([[0], [0]])
    differences = bootstrap_differences(a, b, resamples=20_000, seed=5)
    values, counts = np.unique(differences, return_counts=True)
    assert values.tolist() == [0.0, 0.5, 1.0]
    np.testing.assert_allclose(counts / counts.sum(), [0.25, 0.5, 0.25], atol=0.015)
    # with one seed each the same data give no spread at all: the seeds are what varies here
    assert set(bootstrap_differences(a[:1], b[:1], resamples=100)) == {1.0}


def test_the_bootstrap_spread_matches_the_paired_formula() -> None:
    """For one seed the bootstrap variance of the difference is (p10 + p01 - (p10 - p01)^2) / N."""
    rng = np.random.default_rng(0)
    n = 2_000
    a = rng.random(n) < 0.7
    b = np.where(rng.random(n) < 0.8, a, ~a)  # agrees with A on about 80% of the images
    p10, p01 = (a & ~b).mean(), (~a & b).mean()
    differences = bootstrap_differences(a, b, resamples=20_000, seed=0)
    assert differences.mean() == pytest.approx(p10 - p01, abs=0.001)
    assert differences.std() == pytest.approx(math.sqrt((p10 + p01 - (p10 - p01) ** 2) / n), rel=0.03)
    result = paired_bootstrap(a, b)
    assert result.low < result.difference < result.high
    assert result.high - result.low == pytest.approx(2 * 1.96 * differences.std(), rel=0.05)


def test_the_interval_is_seeded() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.random(300) < 0.5, rng.random(300) < 0.5
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)
    same, other = bootstrap_differences(a, b), bootstrap_differences(a, b, seed=1)
    assert np.array_equal(same, bootstrap_differences(a, b)) and not np.array_equal(same, other)


def test_unequal_seed_counts_resample_each_model_apart() -> None:
    a = np.array([[1, 1, 0, 0], [1, 0, 0, 0]])
    b = np.array([[1, 0, 1, 0]])
    result = paired_bootstrap(a, b, resamples=2_000)
    assert result.seeds == (2, 1) and result.accuracy_a == 3 / 8 and result.accuracy_b == 0.5
    assert result.difference == pytest.approx(-1 / 8)


def test_mcnemar_against_binomial_sums_by_hand() -> None:
    def flags(only_a: int, only_b: int, both: int = 3, neither: int = 2) -> tuple[np.ndarray, np.ndarray]:
        a = [1] * only_a + [0] * only_b + [1] * both + [0] * neither
        b = [0] * only_a + [1] * only_b + [1] * both + [0] * neither
        return np.array(a), np.array(b)

    # 1 vs 5 discordant: 2 * (C(6,0) + C(6,1)) / 2^6 = 14 / 64
    assert mcnemar(*flags(1, 5)) == pytest.approx(14 / 64, rel=1e-12)
    assert mcnemar(*flags(5, 1)) == pytest.approx(14 / 64, rel=1e-12)  # two-sided: symmetric
    # 0 vs 3: 2 * 1 / 8
    assert mcnemar(*flags(0, 3)) == 0.25
    # 2 vs 2: 2 * (1 + 4 + 6) / 16 > 1, capped
    assert mcnemar(*flags(2, 2)) == 1.0
    # 0 vs 12: 2 / 4096; the concordant images play no part
    assert mcnemar(*flags(0, 12, both=100, neither=50)) == pytest.approx(2 / 4096, rel=1e-12)
    assert mcnemar(*flags(0, 0)) == 1.0  # never disagree
    # large counts stay exact: 4,000 vs 4,400 discordant is far below 1e-3 and not zero
    p = mcnemar(*flags(4_000, 4_400, both=0, neither=0))
    assert 0 < p < 1e-3


def test_mcnemar_uses_the_first_seed() -> None:
    a = np.array([[1, 1, 1, 0], [0, 0, 0, 0]])
    b = np.array([[0, 0, 0, 0], [0, 0, 0, 0]])
    assert paired_bootstrap(a, b, resamples=100).p_value == mcnemar(a[0], b[0]) == 0.25


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="different numbers of images"):
        bootstrap_differences(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="right/wrong flags"):
        bootstrap_differences(np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(np.ones(3), np.ones(3), confidence=95)
