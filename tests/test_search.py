"""The (alpha, beta, gamma) grid: constraint, candidates that really differ, resumable loop."""

import json

import pytest

from effnet.config import GridAxis, SearchConfig
from effnet.models import build_model, compound_spec, count_parameters, spec_for_name
from effnet.search import Candidate, SearchError, choose, grid_candidates, run_search


def test_constraint_arithmetic():
    assert Candidate(1.2, 1.1, 1.15).constraint == pytest.approx(1.2 * 1.21 * 1.3225)
    assert Candidate(1.0, 1.0, 1.0).constraint == 1.0
    assert Candidate(2.0, 1.0, 1.0).constraint == 2.0


def test_grid_keeps_only_feasible_points_and_always_the_papers():
    cfg = SearchConfig()  # params.yaml's grid: steps of 0.1, tolerance 0.1
    candidates = grid_candidates(cfg)
    assert all(abs(c.constraint - 2) <= 0.1 + 1e-12 for c in candidates)
    assert all(c.alpha >= 1 and c.beta >= 1 and c.gamma >= 1 for c in candidates)
    assert sum(c.is_paper for c in candidates) == 1
    assert Candidate(1.2, 1.1, 1.2) in candidates and Candidate(1.0, 1.0, 1.0) not in candidates
    assert len(candidates) == 14  # 13 grid points + (1.2, 1.1, 1.15)
    # on a grid that holds the paper's point it is not added twice
    fine = SearchConfig(alpha=GridAxis(1.2, 1.2, 0.05), beta=GridAxis(1.1, 1.1, 0.05), gamma=GridAxis(1.1, 1.2, 0.05))
    assert [c.coefficients for c in grid_candidates(fine)] == [(1.2, 1.1, 1.15), (1.2, 1.1, 1.2)]


def test_grid_without_feasible_point_is_an_error():
    cfg = SearchConfig(alpha=GridAxis(1.0, 1.1, 0.1), beta=GridAxis(1.0, 1.0, 0.1), gamma=GridAxis(1.0, 1.0, 0.1),
                       tolerance=0.05)
    with pytest.raises(SearchError, match="no point with .* <= 0.05"):
        grid_candidates(cfg)


def test_every_candidate_really_scales_b0():
    b0 = spec_for_name("efficientnet_b0")
    b0_params = count_parameters(build_model(b0))
    for c in grid_candidates(SearchConfig()):
        spec = compound_spec(1.0, c.coefficients)
        assert spec.depth == pytest.approx(c.alpha) and spec.width == pytest.approx(c.beta)
        assert spec.resolution == round(32 * c.gamma)
        assert count_parameters(build_model(spec)) != b0_params or spec.resolution != b0.resolution, c
    unscaled = compound_spec(1.0, (1.0, 1.0, 1.0))
    assert count_parameters(build_model(unscaled)) == b0_params and unscaled.resolution == 32


class FakeTrainer:
    def __init__(self, fail_on: int | None = None):
        self.trained, self.fail_on = [], fail_on

    def __call__(self, candidate):
        if self.fail_on is not None and len(self.trained) == self.fail_on:
            raise KeyboardInterrupt("interrupted")
        self.trained.append(candidate)
        return {"val_top1": candidate.alpha / 10, "flops": 1, "params": 1, "train_time_s": 0.0}


def test_resume_skips_finished_candidates(tmp_path):
    candidates = grid_candidates(SearchConfig())
    first = FakeTrainer(fail_on=5)
    with pytest.raises(KeyboardInterrupt):
        run_search(candidates, first, tmp_path, "settings-1")
    assert len(first.trained) == 5 and len(list(tmp_path.glob("*.json"))) == 5
    second = FakeTrainer()
    records = run_search(candidates, second, tmp_path, "settings-1")
    assert second.trained == candidates[5:]  # only the unfinished ones
    assert [(r["alpha"], r["beta"], r["gamma"]) for r in records] == [c.coefficients for c in candidates]
    assert json.loads((tmp_path / f"{candidates[0].key}.json").read_text())["constraint"] == pytest.approx(candidates[0].constraint)
    third = FakeTrainer()
    run_search(candidates, third, tmp_path, "settings-1")
    assert third.trained == []
    changed = FakeTrainer()
    run_search(candidates, changed, tmp_path, "settings-2")  # other settings: nothing reused
    assert changed.trained == candidates


def test_choose_on_validation_accuracy():
    records = [{"val_top1": 0.5, "constraint": 2.05, "flops": 3}, {"val_top1": 0.6, "constraint": 1.92, "flops": 2},
               {"val_top1": 0.6, "constraint": 2.01, "flops": 4}]
    assert choose(records) is records[2]  # tie on accuracy: constraint nearest 2
    with pytest.raises(SearchError):
        choose([])
