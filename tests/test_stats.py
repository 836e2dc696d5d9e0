"""Paired bootstrap and McNemar's test against cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from effnet.stats import bootstrap_differences, bootstrap_p_value, holm, mcnemar, paired_bootstrap, percentile_interval


def test_a_model_against_itself_is_exactly_zero_and_p_one() -> None:
    rng = np.random.default_rng(1)
    for seeds in (1, 3):
        correct = rng.random((seeds, 500)) < 0.6
        result = paired_bootstrap(correct, correct.copy())
        assert (result.difference, result.low, result.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)
        assert result.mcnemar_p == (1.0 if seeds == 1 else None)
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
    assert result.mcnemar_p == 1.0  # one discordant image: 2 * P(X <= 0) = 2 * 1/2, capped
    assert result.p_value == pytest.approx(0.5, abs=0.03)  # 2 * P*(d <= 0) = 2 * 1/4


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


def test_mcnemar_only_where_each_side_is_one_network() -> None:
    a = np.array([[1, 1, 1, 0], [0, 0, 0, 0]])
    b = np.array([[0, 0, 0, 0], [0, 0, 0, 0]])
    assert paired_bootstrap(a[:1], b[:1], resamples=100).mcnemar_p == mcnemar(a[0], b[0]) == 0.25
    assert paired_bootstrap(a, b, resamples=100).mcnemar_p is None  # several seeds: one seed's test would mislead
    assert paired_bootstrap(a, b[:1], resamples=100).mcnemar_p is None


def test_bootstrap_p_value_agrees_with_the_percentile_interval() -> None:
    rng = np.random.default_rng(4)
    for centre in (0.0, 0.5, 1.0, 2.0, 3.0):
        d = rng.normal(centre, 1.0, 20_000)
        p = bootstrap_p_value(d)
        assert p == pytest.approx(2 * min((d <= 0).mean(), (d >= 0).mean()))
        for level in (0.9, 0.95, 0.99):
            low, high = percentile_interval(d, level)
            if abs(p - (1 - level)) > 0.002:  # away from the boundary the two decisions agree
                assert (p < 1 - level) == (not low <= 0 <= high)
    assert bootstrap_p_value(np.zeros(10)) == 1.0


def _normal_family(centres: list[float], n: int = 20_000) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.normal(c, 1.0, n) for c in centres]


def test_holm_steps_down_and_stops() -> None:
    # one-sided tails of N(c, 1) at 0: p = 2 * Phi(-c); c = 4: 6e-5, 3: 0.0027, 2.2: 0.028, 0.5: 0.62
    family = _normal_family([2.2, 4.0, 0.5, 3.0])
    corrected = holm(family)
    # ordered by p: 4.0 (step 1, alpha/4), 3.0 (step 2, alpha/3), 2.2 (step 3, alpha/2 = 0.025 < 0.028: stops)
    assert [c.distinguishable for c in corrected] == [False, True, False, True]
    assert corrected[1].confidence == pytest.approx(1 - 0.05 / 4)
    assert corrected[3].confidence == pytest.approx(1 - 0.05 / 3)
    # the two not rejected share the Bonferroni level over the two left
    assert corrected[0].confidence == corrected[2].confidence == pytest.approx(1 - 0.05 / 2)
    for c, d in zip(corrected, family, strict=True):  # holm returns one result per distribution of the family
        assert (c.low, c.high) == percentile_interval(d, c.confidence)
        assert c.distinguishable == (not c.low <= 0 <= c.high)  # the interval and the verdict never disagree
        assert c.detectable == pytest.approx((c.high - c.low) / 2)
        assert c.detectable == pytest.approx(norm_quantile(1 - (1 - c.confidence) / 2), rel=0.05)  # N(c, 1): z * 1
    # Holm-adjusted p: running max of (m - j + 1) p_(j)
    p = sorted(bootstrap_p_value(d) for d in family)
    expected = np.maximum.accumulate([min(1, (4 - j) * v) for j, v in enumerate(p)])
    assert sorted(c.p_holm for c in corrected) == pytest.approx(list(expected))
    # uncorrected, the third comparison would have been "distinguishable" at 95%
    low, high = percentile_interval(family[0], 0.95)
    assert low > 0


def test_holm_of_one_comparison_is_the_uncorrected_interval() -> None:
    (d,) = _normal_family([1.0])
    (c,) = holm([d])
    assert c.confidence == 0.95 and (c.low, c.high) == percentile_interval(d, 0.95)
    assert holm([]) == []


def norm_quantile(q: float) -> float:
    low, high = -10.0, 10.0
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < q else (low, mid)
    return low


def _simulated_pair(
    rng: np.random.Generator, images: int, seeds: int, accuracy: tuple[float, float], seed_sd: float
) -> tuple[np.ndarray, np.ndarray]:
    """Right/wrong flags of two classifiers on the same images, `seeds` networks each.

    Image i has an ease z_i ~ N(0, 1) shared by both models; network (model m, seed s) gets
    it right iff z_i + e > c_m + u_s, e ~ N(0, 1) per network and image, u_s ~ N(0, seed_sd)
    per network: the seed-to-seed noise. c_m is set so that the model's expected accuracy,
    over images and seeds, is accuracy[m]: Phi(-c / sqrt(2 + seed_sd^2)) = accuracy.
    """
    z = rng.standard_normal(images)
    out = []
    for acc in accuracy:
        c = -math.sqrt(2 + seed_sd**2) * norm_quantile(acc)
        u = rng.standard_normal(seeds) * seed_sd
        out.append(z[None] + rng.standard_normal((seeds, images)) > (c + u)[:, None])
    return out[0], out[1]


def _coverage(seeds: int, simulations: int, seed_sd_points: float) -> float:
    rng = np.random.default_rng(11)
    accuracy = (0.62, 0.60)  # a true difference of 2 points
    # latent seed sd giving `seed_sd_points` of accuracy sd per network: d accuracy / du = pdf(q) / sqrt(2)
    q = norm_quantile(0.61)
    seed_sd = seed_sd_points / 100 / (math.exp(-q * q / 2) / math.sqrt(2 * math.pi) / math.sqrt(2))
    covered = 0
    for k in range(simulations):
        a, b = _simulated_pair(rng, 1_500, seeds, accuracy, seed_sd)
        low, high = percentile_interval(bootstrap_differences(a, b, resamples=1_000, seed=k), 0.95)
        covered += low <= accuracy[0] - accuracy[1] <= high
    return covered / simulations


def test_the_interval_covers_a_known_difference_under_seed_noise() -> None:
    """Three seeds and 0.5 points of seed-to-seed noise (what train.seeds = 3 defaults to): the
    two-level interval covers the true difference in >= 93% of simulated runs; one seed does
    not cover as often, since its interval sees only the test images."""
    three = _coverage(seeds=3, simulations=300, seed_sd_points=0.5)
    assert three >= 0.93, three
    one = _coverage(seeds=1, simulations=300, seed_sd_points=0.5)
    assert one < three, (one, three)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="different numbers of images"):
        bootstrap_differences(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="right/wrong flags"):
        bootstrap_differences(np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(np.ones(3), np.ones(3), confidence=95)
