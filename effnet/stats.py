"""Paired statistics of two models on the same test images: how sure is a difference in accuracy?

Two models evaluated on the same images are compared image by image (a paired design),
which is far more sensitive than comparing two accuracies as if they came from different
samples: most images are right (or wrong) for both, and only the images on which they
disagree carry information about which is better.

- `paired_bootstrap`: the accuracy difference A - B with a percentile interval from a
  **two-level** bootstrap. Each resample draws the test images with replacement (the same
  draw for both models: paired) and, when the models were trained with several seeds
  (`train.seeds`), also draws the seeds with replacement, so the interval covers both the
  finite test set and the seed-to-seed variation of training. Seed k of both models is
  trained with the same `train.seed + k` (same data order, augmentations, initial draws),
  so when both have the same number of seeds the seed draw is shared (seed k paired with
  seed k); otherwise each model's seeds are drawn independently.
- `holm`: the family of comparisons a report draws, corrected for multiplicity by Holm's
  step-down procedure, each with its corrected interval and the smallest difference that
  comparison could have detected (`Corrected`).
- `mcnemar`: McNemar's exact test, the two-sided binomial test on the discordant images
  (right for one model, wrong for the other). Only where each side is one trained network:
  with several seeds a test on one seed of each ignores the seed-to-seed variation (with
  0.5 points of seed noise and no true difference it rejected in about a quarter of
  simulated runs), so `paired_bootstrap` gives it only for one seed each.

numpy only (no torch, no scipy): the report stage uses it on a machine without weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
CONFIDENCE = 0.95
SEED = 0
_CHUNK = 1_000  # resamples drawn at a time: bounds memory when many seeds give many distinct image patterns


@dataclass(frozen=True)
class PairedComparison:
    """A - B on the same images: accuracies, the difference, its (uncorrected) interval and p-values."""

    accuracy_a: float  # mean over seeds and images
    accuracy_b: float
    difference: float  # accuracy_a - accuracy_b
    low: float  # the percentile interval of the difference, at `confidence`
    high: float
    p_value: float  # two-sided bootstrap p-value (`bootstrap_p_value`), over images and seeds
    mcnemar_p: float | None  # McNemar's exact test; None unless each side is one network (one seed)
    images: int
    seeds: tuple[int, int]  # seeds of A, of B
    confidence: float = CONFIDENCE
    resamples: int = RESAMPLES

    @property
    def distinguishable(self) -> bool:
        """False when the interval covers 0: the data cannot tell the two models apart."""
        return not (self.low <= 0.0 <= self.high)


def _as_correct(correct: np.ndarray, name: str) -> np.ndarray:
    """(seeds, images) booleans from a (images,) or (seeds, images) array of 0/1 or booleans."""
    array = np.asarray(correct)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name}: expected (images,) or (seeds, images) right/wrong flags, got shape {array.shape}")
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name}: expected right/wrong flags (booleans or 0/1)")
    return array.astype(bool)


def bootstrap_differences(
    correct_a: np.ndarray, correct_b: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED
) -> np.ndarray:
    """The bootstrap distribution of accuracy(A) - accuracy(B): one value per resample.

    `correct_a` and `correct_b` are right/wrong flags, (images,) or (seeds, images), on the
    same images in the same order. Every resample is two-level:

    1. the images are drawn with replacement, the same draw for A and B;
    2. the seeds are drawn with replacement: one shared draw when A and B have the same
       number of seeds (seed k of one paired with seed k of the other), else one per model.

    The value of a resample is the mean over its drawn seeds and images of A's flags minus
    B's. Vectorised without drawing image indices: the statistic depends on the images only
    through how often each distinct right/wrong pattern (over all seeds of A and B) is
    drawn, and the counts of N images drawn with replacement are exactly multinomial over
    the patterns, with probabilities their frequencies in the test set.
    """
    a, b = _as_correct(correct_a, "correct_a"), _as_correct(correct_b, "correct_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            "the two models were evaluated on different numbers of images "
            f"({a.shape[1]} and {b.shape[1]}); "
            "a paired comparison needs the same test images"
        )
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    seeds_a, seeds_b, images = a.shape[0], b.shape[0], a.shape[1]
    patterns, counts = np.unique(np.concatenate([a, b]).T, axis=0, return_counts=True)  # (K, seeds_a + seeds_b), (K,)
    patterns = patterns.astype(np.int64)
    paired = seeds_a == seeds_b
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        n = min(_CHUNK, resamples - start)
        # (n, seeds_a + seeds_b): right answers per seed
        drawn = rng.multinomial(images, counts / images, size=n) @ patterns
        right_a, right_b = drawn[:, :seeds_a], drawn[:, seeds_a:]
        # (n, seeds_a): times each seed drawn
        weights_a = rng.multinomial(seeds_a, np.full(seeds_a, 1 / seeds_a), size=n)
        if paired:
            # integer sums first, so that a model against itself gives exactly 0
            out[start : start + n] = (weights_a * (right_a - right_b)).sum(1) / (seeds_a * images)
        else:
            weights_b = rng.multinomial(seeds_b, np.full(seeds_b, 1 / seeds_b), size=n)
            out[start : start + n] = (weights_a * right_a).sum(1) / (seeds_a * images) - (weights_b * right_b).sum(
                1
            ) / (seeds_b * images)
    return out


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """McNemar's exact two-sided p-value for paired right/wrong flags of one seed each (images,).

    With b images right only for A and c right only for B, under the null hypothesis (equal
    accuracy) each of the n = b + c discordant images is equally likely to favour either
    model, so the p-value is 2 * P(Binomial(n, 1/2) <= min(b, c)), capped at 1; 1 when the
    models never disagree. Computed exactly with integers (`math.comb`).
    """
    a, b = _as_correct(correct_a, "correct_a"), _as_correct(correct_b, "correct_b")
    if a.shape[0] != 1 or b.shape[0] != 1 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"McNemar's test needs one (images,) vector per model of equal length; got {a.shape} and {b.shape}"
        )
    only_a = int((a & ~b).sum())
    only_b = int((b & ~a).sum())
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**n)  # int / int: correctly rounded, however large


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from a bootstrap distribution of A - B.

    2 * min(P*(d <= 0), P*(d >= 0)), capped at 1: the smallest alpha at which the
    percentile interval at confidence 1 - alpha still excludes 0 (so the two agree).
    Its resolution is 1 / len(differences); 1 when every resample is exactly 0.
    """
    d = np.asarray(differences)
    return float(min(1.0, 2.0 * min((d <= 0).mean(), (d >= 0).mean())))


def percentile_interval(differences: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central percentile interval of `differences` at `confidence`."""
    low, high = np.quantile(differences, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def paired_bootstrap(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> PairedComparison:
    """Accuracy difference A - B with its two-level paired bootstrap interval and p-value (uncorrected).

    The interval is the percentile interval of `bootstrap_differences` (seeded: the same
    inputs give the same interval), over images and seeds. McNemar's p-value only when each
    side is one network; None otherwise. A family of comparisons is corrected by `holm`.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    a, b = _as_correct(correct_a, "correct_a"), _as_correct(correct_b, "correct_b")
    differences = bootstrap_differences(a, b, resamples=resamples, seed=seed)
    low, high = percentile_interval(differences, confidence)
    accuracy_a, accuracy_b = float(a.mean()), float(b.mean())
    one_each = a.shape[0] == 1 and b.shape[0] == 1
    return PairedComparison(
        accuracy_a=accuracy_a,
        accuracy_b=accuracy_b,
        difference=accuracy_a - accuracy_b,
        low=low,
        high=high,
        p_value=bootstrap_p_value(differences),
        mcnemar_p=mcnemar(a, b) if one_each else None,
        images=a.shape[1],
        seeds=(a.shape[0], b.shape[0]),
        confidence=confidence,
        resamples=resamples,
    )


def accuracy_interval(
    correct: np.ndarray, *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = SEED
) -> tuple[float, float]:
    """The percentile interval of one model's accuracy, from the same two-level bootstrap (images, then seeds).

    `correct`: (images,) or (seeds, images) right/wrong flags. A model against one that
    never answers right: the difference is then exactly the model's accuracy, resampled.
    """
    a = _as_correct(correct, "correct")
    never = np.zeros((1, a.shape[1]), dtype=bool)
    return percentile_interval(bootstrap_differences(a, never, resamples=resamples, seed=seed), confidence)


@dataclass(frozen=True)
class Corrected:
    """One comparison of a family after Holm's correction."""

    confidence: float  # of this comparison's corrected interval (>= the family's nominal confidence)
    low: float  # the corrected percentile interval of A - B
    high: float
    p_holm: float  # Holm-adjusted p-value (of `bootstrap_p_value`)
    distinguishable: bool  # Holm rejects "no difference": the corrected interval excludes 0
    detectable: float  # half the width of the corrected interval: the smallest |A - B| this comparison could detect


def holm(differences: list[np.ndarray], confidence: float = CONFIDENCE) -> list[Corrected]:
    """Holm's step-down correction of a family of comparisons, from their bootstrap distributions.

    With alpha = 1 - confidence and m comparisons ordered by p-value (`bootstrap_p_value`),
    step j (j = 1..m) tests its comparison at alpha / (m - j + 1): its percentile interval at
    confidence 1 - alpha / (m - j + 1) must exclude 0, else the procedure stops there and
    this and every later comparison is "not distinguishable". A rejected comparison keeps
    the interval of its step (a step-down interval, not a simultaneous one); the comparisons
    not rejected all get the interval at 1 - alpha / (number not rejected), the Bonferroni
    interval over the rest, as Strassburger and Bretz (2008) give for them. So an interval
    contains 0 exactly when the comparison is not rejected. The decisions control the
    family-wise error rate at alpha (Holm, 1979).

    `detectable` is the half-width of the corrected interval: a difference observed with
    the same spread is told from 0 only if it is larger than this (the resolution of the
    run for that comparison, at the corrected level). The input order is kept.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    m = len(differences)
    alpha = 1.0 - confidence
    p = [bootstrap_p_value(d) for d in differences]
    order = sorted(range(m), key=lambda i: p[i])
    adjusted, running = [0.0] * m, 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * p[i]))
        adjusted[i] = running
    levels = [0.0] * m
    rejected = [False] * m
    for j, i in enumerate(order):
        level = 1.0 - alpha / (m - j)
        low, high = percentile_interval(differences[i], level)
        if not low <= 0.0 <= high:
            levels[i], rejected[i] = level, True
            continue
        for rest in order[j:]:  # Holm stops: the rest share the Bonferroni level over the m - j not rejected
            levels[rest] = 1.0 - alpha / (m - j)
        break
    out = []
    for i in range(m):
        low, high = percentile_interval(differences[i], levels[i])
        out.append(
            Corrected(
                confidence=levels[i],
                low=low,
                high=high,
                p_holm=adjusted[i],
                distinguishable=rejected[i],
                detectable=(high - low) / 2,
            )
        )
    return out
