"""The grid search for the compound coefficients (paper Section 3.3, step 1), at equal real cost.

The paper fixes phi = 1, "assuming twice more resources available", and searches alpha,
beta, gamma >= 1 under alpha * beta^2 * gamma^2 ~ 2 (Eq. 3): the candidates are meant to
cost the same, about 2x B0's FLOPs. Built at phi = 1 they do not (whole blocks, channels
in multiples of 8, whole pixels: 2.4-3.8x B0 at 32 px), and a bigger network wins by
being bigger. So here every grid point is placed at the phi where its *real* network
lands on the FLOPs target (`search.flops_target` x B0, within `search.flops_tolerance`;
`place`), and ranked there on the validation split; the test split plays no part.

Coefficient sets that build the same network at their matched phi (same blocks and
channels per stage, same resolution: `effnet.models.architecture`) are trained once and
reported together (`group_identical`): the data cannot tell them apart, and the choice
among them is a stated rule, not a finding. A candidate whose network cannot get within
the tolerance is reported as infeasible and not trained.

Where the search is placed matters more than how finely the grid is drawn: at a small
target most grid points round to the same few networks (`distinctness` measures, per target,
how many distinct and how many materially distinct networks the grid builds). Each distinct
network is trained with `search.seeds` seeds and scored on the validation split with a 95%
interval over images and seeds (`effnet.stats.accuracy_interval`). `decide` then declares a
winner only where its paired, Holm-corrected interval against the paper's point excludes 0;
otherwise it reports the networks that cannot be told apart from the paper's and takes the
paper's coefficients, by the rule written in `DECISION_RULE`.

The loop is resumable: each finished network and seed is written to its own JSON file at
once, and a rerun skips those whose file exists with the same fingerprint (the settings and
the code that produced it, `effnet.fingerprint`), so nothing finished is trained twice and a
change of the code really retrains.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from effnet.config import PAPER_COEFFICIENTS, SearchConfig
from effnet.io import write_json
from effnet.models import ModelSpec, architecture, count_flops
from effnet.scaling import built_multipliers, match_flops
from effnet.stats import CONFIDENCE, accuracy_interval, bootstrap_differences, holm


class SearchError(ValueError):
    """The grid has no feasible point, or the search results are unusable."""


@dataclass(frozen=True)
class Candidate:
    alpha: float
    beta: float
    gamma: float

    @property
    def coefficients(self) -> tuple[float, float, float]:
        return (self.alpha, self.beta, self.gamma)

    @property
    def constraint(self) -> float:
        """alpha * beta^2 * gamma^2: how much FLOPs grow per unit of phi (Eq. 3)."""
        return self.alpha * self.beta**2 * self.gamma**2

    @property
    def key(self) -> str:
        return f"a{self.alpha:g}_b{self.beta:g}_g{self.gamma:g}"

    @property
    def is_paper(self) -> bool:
        return all(math.isclose(a, b) for a, b in zip(self.coefficients, PAPER_COEFFICIENTS, strict=True))


def grid_candidates(cfg: SearchConfig) -> list[Candidate]:
    """Grid points with |alpha beta^2 gamma^2 - 2| <= tolerance, plus the paper's (1.2, 1.1, 1.15).

    Raises SearchError when the grid itself holds no feasible point: the paper's point is
    added for comparison, not to rescue an empty search.
    """
    feasible = [
        Candidate(a, b, g)
        for a, b, g in itertools.product(cfg.alpha.values(), cfg.beta.values(), cfg.gamma.values())
        if abs(a * b**2 * g**2 - 2.0) <= cfg.tolerance + 1e-12
    ]
    if not feasible:
        raise SearchError(
            f"the search grid has no point with |alpha * beta^2 * gamma^2 - 2| <= {cfg.tolerance}: widen "
            f"search.alpha/beta/gamma (now alpha {cfg.alpha.min}..{cfg.alpha.max}, "
            f"beta {cfg.beta.min}..{cfg.beta.max}, "
            f"gamma {cfg.gamma.min}..{cfg.gamma.max}), use a finer step, or raise search.tolerance"
        )
    if not any(c.is_paper for c in feasible):
        feasible.append(Candidate(*PAPER_COEFFICIENTS))
    return feasible


@dataclass(frozen=True)
class Placed:
    """A candidate at the phi where its real network lands on the FLOPs target (or as near as it gets)."""

    candidate: Candidate
    phi: float
    spec: ModelSpec
    flops: int
    flops_ratio: float  # FLOPs / B0's FLOPs, as built
    architecture: str  # `effnet.models.architecture`: equal keys, identical networks
    built: dict[str, float]  # depth, width, resolution multipliers as built (`effnet.scaling.built_multipliers`)
    feasible: bool  # |flops_ratio / target - 1| <= the FLOPs tolerance


def place(
    candidates: Iterable[Candidate],
    base: ModelSpec,
    target: float,
    flops_tolerance: float,
    flops_fn: Callable[[ModelSpec], int] = count_flops,
) -> list[Placed]:
    """Solve, for every candidate, the phi at which its real network costs `target` x `base`'s FLOPs.

    The matched-FLOPs bisection of the scaling study (`match_flops(strategy='compound')`),
    so all candidates are compared at the same real cost, not at phi = 1, where the rounding
    of blocks, channels and pixels makes them cost 2.4-3.8x B0 instead of 2x. A candidate
    whose nearest network lies further than `flops_tolerance` (relative) from the target is
    marked infeasible. Every matched spec has the target's regularisation (`target_dropout`).
    """
    base_flops = flops_fn(base)
    placed = []
    for c in candidates:
        matched = match_flops("compound", target, base, c.coefficients, flops_fn=flops_fn)
        spec = replace(matched.spec, name=f"search_{c.key}")
        placed.append(
            Placed(
                candidate=c,
                phi=matched.multiplier,
                spec=spec,
                flops=matched.flops,
                flops_ratio=matched.flops / base_flops,
                architecture=architecture(spec),
                built=built_multipliers(spec, base),
                feasible=abs(matched.relative_error) <= flops_tolerance,
            )
        )
    return placed


def _preference(p: Placed) -> tuple:
    # Among coefficient sets that build the same network the data cannot choose: take the
    # constraint nearest 2, then the paper's point, then the smallest (alpha, beta, gamma).
    return (abs(p.candidate.constraint - 2.0), not p.candidate.is_paper, p.candidate.coefficients)


def group_identical(placed: Iterable[Placed]) -> list[list[Placed]]:
    """The feasible candidates grouped by the network they build, each group in order of `_preference`.

    The first of each group is the one trained; the others build the very same network
    (same blocks and channels per stage, same resolution) and share its result. Groups
    keep the order in which their first member appears in the grid.
    """
    groups: dict[str, list[Placed]] = {}
    for p in placed:
        if p.feasible:
            groups.setdefault(p.architecture, []).append(p)
    return [sorted(g, key=_preference) for g in groups.values()]


# Two networks differ materially when, as built, their depth, width or resolution differ by at
# least this much (relative): the 5% by which the scaling study asks a compound model to change
# each dimension. Head-channel variants (h1280 against h1288) differ by well under 1%.
MATERIAL = 0.05


def _material_clusters(groups: list[list[Placed]], material: float = MATERIAL) -> list[list[list[Placed]]]:
    """The groups joined into clusters of networks that differ by less than `material` in every built dimension
    (single linkage: a chain of near-identical networks is one cluster)."""
    parent = list(range(len(groups)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in itertools.combinations(range(len(groups)), 2):
        a, b = groups[i][0].built, groups[j][0].built
        if all(abs(a[k] / b[k] - 1.0) < material for k in ("depth", "width", "resolution")):
            parent[root(j)] = root(i)
    clusters: dict[int, list[list[Placed]]] = {}
    for i, g in enumerate(groups):
        clusters.setdefault(root(i), []).append(g)
    return list(clusters.values())


def distinctness(placed: list[Placed], target: float, material: float = MATERIAL) -> dict[str, Any]:
    """How many different networks the grid builds at `target` x B0's FLOPs, and how they differ.

    candidates, feasible, distinct (different architectures), material (clusters that differ
    by >= `material` in some built dimension), paper_feasible, largest_cluster (coefficient
    sets in the biggest cluster) and the range of each built multiplier over the distinct
    networks: what the data could possibly tell apart at this target.
    """
    groups = group_identical(placed)
    clusters = _material_clusters(groups, material)
    built = [g[0].built for g in groups]
    row: dict[str, Any] = {
        "target": target,
        "candidates": len(placed),
        "feasible": sum(p.feasible for p in placed),
        "distinct": len(groups),
        "material": len(clusters),
        "paper_feasible": any(p.candidate.is_paper and p.feasible for p in placed),
        "largest_cluster": max((sum(len(g) for g in c) for c in clusters), default=0),
    }
    for k in ("depth", "width", "resolution"):
        row[f"{k}_min"] = round(min((b[k] for b in built), default=float("nan")), 4)
        row[f"{k}_max"] = round(max((b[k] for b in built), default=float("nan")), 4)
    return row


DISTINCTNESS_COLUMNS = [
    "target",
    "candidates",
    "feasible",
    "distinct",
    "material",
    "paper_feasible",
    "largest_cluster",
    "depth_min",
    "depth_max",
    "width_min",
    "width_max",
    "resolution_min",
    "resolution_max",
]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def run_search(
    groups: list[list[Placed]],
    train_network: Callable[[Placed, int], dict[str, Any]],
    results_dir: Path,
    settings_fingerprint: str,
    seeds: int = 1,
    log: Callable[[str], None] | None = print,
    write: bool = True,
) -> dict[str, dict[str, Any]]:
    """Train `seeds` networks per group of identical candidates, unless already finished; return records by
    architecture.

    `train_network(placed, k)` trains the group's first member with seed index k (the caller
    adds it to `train.seed`) and returns its measurements: `val_top1`, `val_correct` (0/1 per
    validation image, in the split's order), time, ... Each (network, seed) is written to
    `results_dir/<architecture>_seed<k>.json` at once, so an interrupted search resumes, and
    a rerun reuses a file only under the same `settings_fingerprint`. The record of a network
    holds `seeds` (one measurement per seed), `val_correct` ((seeds, images) flags) and
    `val_top1`, the mean over seeds and images. `log` gets one line per network and seed,
    with an ETA from those trained so far. Under DDP every rank runs the loop (training is
    collective) and only rank 0 passes `write=True`.
    """
    if seeds < 1:
        raise SearchError(f"search.seeds must be >= 1, got {seeds}")
    if write:
        results_dir.mkdir(parents=True, exist_ok=True)
    say = log or (lambda line: None)

    def finished(path: Path) -> dict[str, Any] | None:
        if path.exists():
            record = json.loads(path.read_text())
            if record.get("fingerprint") == settings_fingerprint:
                return record
        return None

    jobs = [
        (i, group, k, results_dir / f"{group[0].architecture}_seed{k}.json")
        for i, group in enumerate(groups, start=1)
        for k in range(seeds)
    ]
    todo = sum(finished(path) is None for *_, path in jobs)
    per_network: dict[str, list[dict[str, Any]]] = {}
    times: list[float] = []
    for i, group, k, path in jobs:
        first = group[0]
        names = ", ".join(p.candidate.key for p in group)
        where = f"candidate {i}/{len(groups)} seed {k + 1}/{seeds}"
        record = finished(path)
        if record is not None:
            say(f"{where} [{names}]: finished earlier, val top-1 {record['val_top1']:.4f}")
        else:
            eta = f", ETA {_duration(sum(times) / len(times) * (todo - len(times)))}" if times else ""
            say(
                f"{where} [{names}]: phi {first.phi:.3f}, {first.spec.resolution}px, "
                f"{first.flops_ratio:.2f}x B0's FLOPs, training ({todo - len(times)} to train{eta})"
            )
            start = time.perf_counter()
            measured = train_network(first, k)
            times.append(time.perf_counter() - start)
            record = {
                "architecture": first.architecture,
                "seed_index": k,
                **measured,
                "fingerprint": settings_fingerprint,
            }
            if write:
                write_json(path, record)
            say(f"{where}: val top-1 {record['val_top1']:.4f} in {_duration(times[-1])}")
        per_network.setdefault(first.architecture, []).append(record)
    records: dict[str, dict[str, Any]] = {}
    for arch, runs in per_network.items():
        correct = np.array([r["val_correct"] for r in runs], dtype=bool)
        records[arch] = {
            "architecture": arch,
            "seeds": [{k: v for k, v in r.items() if k != "val_correct"} for r in runs],
            "val_correct": correct,
            "val_top1": float(correct.mean()),
            **{k: runs[0].get(k) for k in ("params",)},
            "val_top1_ema": float(np.mean([r.get("val_top1_ema", np.nan) for r in runs])),
            "train_time_s": float(sum(r.get("train_time_s", 0.0) for r in runs)),
        }
    return records


# The rule of `decide`, written down once: metrics/search.json and the report quote it.
DECISION_RULE = (
    "each distinct network is compared with the network of the paper's point (1.2, 1.1, 1.15) on the validation "
    "images, paired, by a bootstrap over images and seeds; the comparisons are one family, corrected by Holm at "
    "a family-wise 95%. A winner is declared only when its corrected interval against the paper's point excludes 0 "
    "and lies above it; among several such, the highest mean validation top-1. Otherwise the search cannot tell the "
    "candidates from the paper's point and the paper's coefficients are taken. Within a network built by several "
    "coefficient sets: the constraint nearest 2, then the paper's point, then the smallest (alpha, beta, gamma)."
)


@dataclass(frozen=True)
class Decision:
    """What the search decided, and why (`decide`)."""

    outcome: str  # 'searched': a winner beats the paper's point; 'paper': the paper's coefficients, by the rule
    chosen: list[Placed]  # the chosen network's group, its first member the coefficients taken (the paper's: its group)
    reason: str
    # by architecture: val top-1 interval and the corrected difference to the paper's
    comparisons: dict[str, dict[str, Any]]
    indistinguishable: list[str]  # architectures not told apart from the paper's network (the paper's included)
    paper: str | None = None  # the architecture of the paper's point; None when it is infeasible


def decide(groups: list[list[Placed]], records: dict[str, dict[str, Any]], confidence: float = CONFIDENCE) -> Decision:
    """Declare a winner only where the data say so, else take the paper's coefficients (`DECISION_RULE`).

    Each network's validation top-1 gets its `confidence` interval over images and seeds
    (`accuracy_interval`); each network other than the paper's is compared with the paper's,
    paired (the same validation images, seed k against seed k), and the family is corrected
    by Holm (`effnet.stats.holm`). Without a feasible paper's point there is nothing to beat:
    the outcome is 'paper' and the reason says so.
    """
    if not groups:
        raise SearchError(
            "no feasible candidate to decide on: every candidate's network missed the FLOPs target; "
            "raise search.flops_tolerance or widen the grid"
        )
    comparisons: dict[str, dict[str, Any]] = {}
    for g in groups:
        arch = g[0].architecture
        low, high = accuracy_interval(records[arch]["val_correct"], confidence=confidence)
        comparisons[arch] = {
            "val_top1": records[arch]["val_top1"],
            "val_top1_low": low,
            "val_top1_high": high,
            "seeds": int(np.asarray(records[arch]["val_correct"]).shape[0]),
        }
    paper = next((g for g in groups if any(p.candidate.is_paper for p in g)), None)
    if paper is None:
        return Decision(
            "paper",
            [],
            "the paper's point cannot be placed within search.flops_tolerance of the target, "
            "so no candidate can be compared with it: the search cannot decide; the paper's coefficients "
            "are taken by the rule",
            comparisons,
            [],
        )
    paper_arch = paper[0].architecture
    others = [g for g in groups if g is not paper]
    if not others:
        return Decision(
            "paper",
            paper,
            "every feasible candidate builds the paper's network: nothing to tell apart",
            comparisons,
            [paper_arch],
            paper_arch,
        )
    corrected = holm(
        [
            bootstrap_differences(records[g[0].architecture]["val_correct"], records[paper_arch]["val_correct"])
            for g in others
        ],
        confidence=confidence,
    )
    # strict: holm returns one Corrected per comparison, one comparison per group of `others`
    for g, h in zip(others, corrected, strict=True):
        arch = g[0].architecture
        comparisons[arch].update(
            minus_paper=records[arch]["val_top1"] - records[paper_arch]["val_top1"],
            low=h.low,
            high=h.high,
            confidence=h.confidence,
            p_holm=h.p_holm,
            detectable=h.detectable,
            distinguishable=h.distinguishable,
        )
    better = [(g, h) for g, h in zip(others, corrected, strict=True) if h.distinguishable and h.low > 0]
    tied = [paper_arch] + [g[0].architecture for g, h in zip(others, corrected, strict=True) if not h.distinguishable]
    if better:
        g, h = max(
            better,
            key=lambda gh: (
                records[gh[0][0].architecture]["val_top1"],
                -abs(gh[0][0].candidate.constraint - 2.0),
                -gh[0][0].flops,
            ),
        )
        return Decision(
            "searched",
            g,
            f"{g[0].candidate.key} beats the paper's point by "
            f"{100 * (records[g[0].architecture]['val_top1'] - records[paper_arch]['val_top1']):+.2f} "
            f"points of validation top-1 (Holm-corrected {100 * h.confidence:.2f}% interval "
            f"[{100 * h.low:+.2f}, {100 * h.high:+.2f}])",
            comparisons,
            tied,
            paper_arch,
        )
    detectable = max(h.detectable for h in corrected)
    return Decision(
        "paper",
        paper,
        f"no network beats the paper's point after Holm's correction over "
        f"{len(others)} comparison{'' if len(others) == 1 else 's'} ({len(tied)} of {len(groups)} "
        "networks cannot be told apart from it; "
        f"differences below about {100 * detectable:.2f} points could not be detected): the paper's "
        "coefficients are taken by the rule",
        comparisons,
        tied,
        paper_arch,
    )


TABLE_COLUMNS = [
    "alpha",
    "beta",
    "gamma",
    "constraint",
    "paper",
    "phi",
    "depth",
    "width",
    "resolution",
    "architecture",
    "params",
    "flops",
    "flops_ratio",
    "status",
    "seeds",
    "val_top1",
    "val_top1_low",
    "val_top1_high",
    "minus_paper",
    "minus_paper_low",
    "minus_paper_high",
    "verdict",
    "val_top1_ema",
    "train_time_s",
    "chosen",
]


def table_rows(
    placed: list[Placed], groups: list[list[Placed]], records: dict[str, dict[str, Any]], decision: Decision
) -> list[dict[str, Any]]:
    """One row per candidate (`TABLE_COLUMNS`): matched phi, built multipliers, FLOPs, and what became of it.

    status: 'trained'; 'same network as <key>' (shares that candidate's result); or
    'infeasible' (no network within the FLOPs tolerance: not trained, no accuracy).
    depth, width, resolution are the built multipliers against B0; val_top1 is the mean over
    seeds and images with its 95% interval; minus_paper the difference to the paper's
    network with its Holm-corrected interval, and verdict what the comparison says.
    """
    first = {g[0].architecture: g[0].candidate.key for g in groups}
    chosen = decision.chosen[0].candidate if decision.chosen else None
    rows = []
    for p in placed:
        c = p.candidate
        row: dict[str, Any] = {
            "alpha": c.alpha,
            "beta": c.beta,
            "gamma": c.gamma,
            "constraint": c.constraint,
            "paper": c.is_paper,
            "phi": p.phi,
            **{k: round(v, 4) for k, v in p.built.items()},
            "architecture": p.architecture,
            "flops": p.flops,
            "flops_ratio": p.flops_ratio,
            "chosen": c == chosen if chosen is not None else c.is_paper,
        }
        if not p.feasible:
            row["status"] = "infeasible"
        else:
            record, compared = records[p.architecture], decision.comparisons.get(p.architecture, {})
            row["status"] = "trained" if first[p.architecture] == c.key else f"same network as {first[p.architecture]}"
            row.update({k: record.get(k) for k in ("params", "val_top1", "val_top1_ema", "train_time_s")})
            row.update({k: compared.get(k) for k in ("seeds", "val_top1_low", "val_top1_high", "minus_paper")})
            row.update(minus_paper_low=compared.get("low"), minus_paper_high=compared.get("high"))
            row["verdict"] = (
                "paper's network"
                if p.architecture == decision.paper
                else ""
                if "distinguishable" not in compared
                else "not distinguishable from the paper's"
                if not compared["distinguishable"]
                else "better than the paper's"
                if compared["low"] > 0
                else "worse than the paper's"
            )
        rows.append(row)
    return rows


def summary(
    placed: list[Placed],
    groups: list[list[Placed]],
    records: dict[str, dict[str, Any]],
    decision: Decision,
    target: float,
    flops_tolerance: float,
    seeds: int,
) -> dict[str, Any]:
    """metrics/search.json: the coefficients taken, the decision and its reason, the networks that cannot be
    told apart from the paper's, the paper's point, and how distinct the grid's networks are at the target."""

    def coefficients(p: Placed) -> dict[str, float]:
        return {"alpha": p.candidate.alpha, "beta": p.candidate.beta, "gamma": p.candidate.gamma}

    keys = {g[0].architecture: [p.candidate.key for p in g] for g in groups}
    if decision.chosen:
        best = decision.chosen[0]
        taken: dict[str, Any] = {
            **coefficients(best),
            "constraint": best.candidate.constraint,
            "phi": best.phi,
            "val_top1": records[best.architecture]["val_top1"],
            "flops_ratio": best.flops_ratio,
        }
    else:
        a, b, g = PAPER_COEFFICIENTS
        taken = {
            "alpha": a,
            "beta": b,
            "gamma": g,
            "constraint": a * b * b * g * g,
            "phi": None,
            "val_top1": None,
            "flops_ratio": None,
        }
    out: dict[str, Any] = {
        **taken,
        "decision": decision.outcome,
        "reason": decision.reason,
        "rule": DECISION_RULE,
        "flops_target": target,
        "flops_tolerance": flops_tolerance,
        "seeds": seeds,
        "candidates": len(placed),
        "networks_trained": len(groups),
        "distinctness": distinctness(placed, target),
        "infeasible": [p.candidate.key for p in placed if not p.feasible],
        "selected_on": f"validation top-1 (raw weights), mean of {seeds} seed(s), "
        f"every candidate at {target:g}x B0's FLOPs",
        "same_network": [coefficients(p) for p in decision.chosen[1:]],
        "indistinguishable": [keys[arch] for arch in decision.indistinguishable],
        "networks": [
            {"architecture": arch, "candidates": keys[arch], **{k: v for k, v in compared.items()}}
            for arch, compared in decision.comparisons.items()
        ],
        "tied_sets": [[p.candidate.key for p in g] for g in groups if len(g) > 1],
    }
    paper = next((p for p in placed if p.candidate.is_paper), None)
    if paper is not None:
        out["paper"] = {
            **coefficients(paper),
            "constraint": paper.candidate.constraint,
            "phi": paper.phi,
            "flops_ratio": paper.flops_ratio,
            "feasible": paper.feasible,
            "val_top1": records[paper.architecture]["val_top1"] if paper.feasible else None,
        }
    return out
