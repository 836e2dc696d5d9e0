"""The grid search for the compound coefficients (paper Section 3.3, step 1).

Fix phi = 1, assume twice the resources, and search alpha, beta, gamma >= 1 under
alpha * beta^2 * gamma^2 ~ 2 (Eq. 3). Every candidate is B0 *really* scaled by its
coefficients (depth alpha, width beta, resolution gamma x base), trained with a short
budget and scored on the validation split; the test split plays no part.

The loop is resumable: each finished candidate is written to its own JSON file at once,
and a rerun skips candidates whose file exists with the same fingerprint (the settings and
the code that produced it, `effnet.fingerprint`), so no finished candidate is trained twice
and a change of the code really retrains.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from effnet.config import PAPER_COEFFICIENTS, SearchConfig
from effnet.io import write_json


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
        return all(math.isclose(a, b) for a, b in zip(self.coefficients, PAPER_COEFFICIENTS))


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


def run_search(candidates: Iterable[Candidate], train_candidate: Callable[[Candidate], dict[str, Any]],
               results_dir: Path, settings_fingerprint: str,
               on_result: Callable[[dict[str, Any], bool], None] | None = None, write: bool = True) -> list[dict[str, Any]]:
    """Train every candidate not already finished under the same settings; return all records.

    `train_candidate` returns the candidate's measurements (validation accuracy, params,
    FLOPs, time); this function adds the coefficients and the constraint and writes the
    record to `results_dir/<key>.json` before moving on. `on_result(record, reused)` is told
    of each record, trained or reused. Under DDP every rank runs the loop (training is
    collective) and only rank 0 passes `write=True`.
    """
    if write:
        results_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for candidate in candidates:
        path = results_dir / f"{candidate.key}.json"
        if path.exists():
            record = json.loads(path.read_text())
            if record.get("fingerprint") == settings_fingerprint:
                records.append(record)
                if on_result:
                    on_result(record, True)
                continue
        measured = train_candidate(candidate)
        record = {"alpha": candidate.alpha, "beta": candidate.beta, "gamma": candidate.gamma,
                  "constraint": candidate.constraint, "paper": candidate.is_paper, **measured,
                  "fingerprint": settings_fingerprint}
        if write:
            write_json(path, record)
        records.append(record)
        if on_result:
            on_result(record, False)
    return records


def choose(records: list[dict[str, Any]], metric: str = "val_top1") -> dict[str, Any]:
    """The best candidate on validation accuracy; ties go to the constraint closest to 2, then fewer FLOPs."""
    if not records:
        raise SearchError("no search results to choose from")
    return max(records, key=lambda r: (r[metric], -abs(r["constraint"] - 2.0), -r.get("flops", 0)))
