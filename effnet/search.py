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

The loop is resumable: each finished network is written to its own JSON file at once, and
a rerun skips networks whose file exists with the same fingerprint (the settings and the
code that produced it, `effnet.fingerprint`), so no finished network is trained twice and a
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

from effnet.config import PAPER_COEFFICIENTS, SearchConfig
from effnet.io import write_json
from effnet.models import ModelSpec, architecture, count_flops
from effnet.scaling import built_multipliers, match_flops


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
            f"search.alpha/beta/gamma (now alpha {cfg.alpha.min}..{cfg.alpha.max}, beta {cfg.beta.min}..{cfg.beta.max}, "
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


def place(candidates: Iterable[Candidate], base: ModelSpec, target: float, flops_tolerance: float,
          flops_fn: Callable[[ModelSpec], int] = count_flops) -> list[Placed]:
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
        placed.append(Placed(candidate=c, phi=matched.multiplier, spec=spec, flops=matched.flops,
                             flops_ratio=matched.flops / base_flops, architecture=architecture(spec),
                             built=built_multipliers(spec, base), feasible=abs(matched.relative_error) <= flops_tolerance))
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


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def run_search(groups: list[list[Placed]], train_network: Callable[[Placed], dict[str, Any]], results_dir: Path,
               settings_fingerprint: str, log: Callable[[str], None] | None = print,
               write: bool = True) -> dict[str, dict[str, Any]]:
    """Train one network per group of identical candidates, unless already finished; return records by architecture.

    `train_network(placed)` trains the group's first member and returns its measurements
    (validation accuracy, time, ...); the record is written to
    `results_dir/<architecture>.json` at once, so an interrupted search resumes, and a
    rerun reuses a record only under the same `settings_fingerprint`. `log` gets one line
    per network, "candidate 3/9", with an ETA from the networks trained so far. Under DDP
    every rank runs the loop (training is collective) and only rank 0 passes `write=True`.
    """
    if write:
        results_dir.mkdir(parents=True, exist_ok=True)
    say = log or (lambda line: None)

    def finished(path: Path) -> dict[str, Any] | None:
        if path.exists():
            record = json.loads(path.read_text())
            if record.get("fingerprint") == settings_fingerprint:
                return record
        return None

    paths = [results_dir / f"{group[0].architecture}.json" for group in groups]
    todo = sum(finished(p) is None for p in paths)
    records: dict[str, dict[str, Any]] = {}
    times: list[float] = []
    for i, (group, path) in enumerate(zip(groups, paths, strict=True), start=1):
        first = group[0]
        names = ", ".join(p.candidate.key for p in group)
        record = finished(path)
        if record is not None:
            say(f"candidate {i}/{len(groups)} [{names}]: finished earlier, val top-1 {record['val_top1']:.4f}")
        else:
            eta = f", ETA {_duration(sum(times) / len(times) * (todo - len(times)))}" if times else ""
            say(f"candidate {i}/{len(groups)} [{names}]: phi {first.phi:.3f}, {first.spec.resolution}px, "
                f"{first.flops_ratio:.2f}x B0's FLOPs, training ({todo - len(times)} to train{eta})")
            start = time.perf_counter()
            measured = train_network(first)
            times.append(time.perf_counter() - start)
            record = {"architecture": first.architecture, **measured, "fingerprint": settings_fingerprint}
            if write:
                write_json(path, record)
            say(f"candidate {i}/{len(groups)}: val top-1 {record['val_top1']:.4f} in {_duration(times[-1])}")
        records[first.architecture] = record
    return records


def choose(groups: list[list[Placed]], records: dict[str, dict[str, Any]], metric: str = "val_top1") -> list[Placed]:
    """The group of the best network on validation accuracy; its first member gives the chosen coefficients.

    Ties between different networks go to the constraint nearest 2, then fewer FLOPs.
    Within the group, the coefficient sets are not identifiable by the data (they built
    the same network); the first by `_preference` is taken and the rest are alternatives.
    """
    if not groups:
        raise SearchError("no feasible candidate to choose from: every candidate's network missed the FLOPs target; "
                          "raise search.flops_tolerance or widen the grid")
    return max(groups, key=lambda g: (records[g[0].architecture][metric], -abs(g[0].candidate.constraint - 2.0),
                                      -g[0].flops))


TABLE_COLUMNS = ["alpha", "beta", "gamma", "constraint", "paper", "phi", "depth", "width", "resolution", "architecture",
                 "params", "flops", "flops_ratio", "status", "val_top1", "val_top1_ema", "train_time_s", "chosen"]


def table_rows(placed: list[Placed], groups: list[list[Placed]], records: dict[str, dict[str, Any]],
               chosen: list[Placed]) -> list[dict[str, Any]]:
    """One row per candidate (`TABLE_COLUMNS`): matched phi, built multipliers, FLOPs, and what became of it.

    status: 'trained'; 'same network as <key>' (shares that candidate's result); or
    'infeasible' (no network within the FLOPs tolerance: not trained, no accuracy).
    depth, width, resolution are the built multipliers against B0.
    """
    first = {g[0].architecture: g[0].candidate.key for g in groups}
    rows = []
    for p in placed:
        c = p.candidate
        row: dict[str, Any] = {"alpha": c.alpha, "beta": c.beta, "gamma": c.gamma, "constraint": c.constraint,
                               "paper": c.is_paper, "phi": p.phi, **{k: round(v, 4) for k, v in p.built.items()},
                               "architecture": p.architecture, "flops": p.flops, "flops_ratio": p.flops_ratio,
                               "chosen": c == chosen[0].candidate}
        if not p.feasible:
            row["status"] = "infeasible"
        else:
            record = records[p.architecture]
            row["status"] = "trained" if first[p.architecture] == c.key else f"same network as {first[p.architecture]}"
            row.update({k: record.get(k) for k in ("params", "val_top1", "val_top1_ema", "train_time_s")})
        rows.append(row)
    return rows


def summary(placed: list[Placed], groups: list[list[Placed]], records: dict[str, dict[str, Any]], chosen: list[Placed],
            target: float, flops_tolerance: float) -> dict[str, Any]:
    """metrics/search.json: the chosen coefficients, the ones the data cannot tell from them, the paper's point."""
    best, record = chosen[0], records[chosen[0].architecture]

    def coefficients(p: Placed) -> dict[str, float]:
        return {"alpha": p.candidate.alpha, "beta": p.candidate.beta, "gamma": p.candidate.gamma}

    out: dict[str, Any] = {
        **coefficients(best), "constraint": best.candidate.constraint, "phi": best.phi, "val_top1": record["val_top1"],
        "flops_ratio": best.flops_ratio, "flops_target": target, "flops_tolerance": flops_tolerance,
        "candidates": len(placed), "networks_trained": len(groups),
        "infeasible": [p.candidate.key for p in placed if not p.feasible],
        "selected_on": f"validation top-1 (raw weights), every candidate at {target:g}x B0's FLOPs",
        "same_network": [coefficients(p) for p in chosen[1:]],
        "identifiable": (
            "yes: no other candidate built the chosen network" if len(chosen) == 1 else
            f"no: {len(chosen)} coefficient sets built the same network at the matched phi, so the data cannot tell "
            "them apart; taken: the constraint nearest 2, then the paper's point, then the smallest (alpha, beta, gamma)"),
        "tied_sets": [[p.candidate.key for p in g] for g in groups if len(g) > 1],
    }
    paper = next((p for p in placed if p.candidate.is_paper), None)
    if paper is not None:
        out["paper"] = {**coefficients(paper), "constraint": paper.candidate.constraint, "phi": paper.phi,
                        "flops_ratio": paper.flops_ratio, "feasible": paper.feasible,
                        "val_top1": records[paper.architecture]["val_top1"] if paper.feasible else None}
    return out
