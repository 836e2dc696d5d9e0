"""The (alpha, beta, gamma) grid: constraint, placement at matched FLOPs, identical networks once, resumable loop."""

import json

import pytest

from effnet.config import GridAxis, SearchConfig
from effnet.models import architecture, count_flops, spec_for_name
from effnet.scaling import target_dropout
from effnet.search import (
    Candidate,
    Placed,
    SearchError,
    choose,
    grid_candidates,
    group_identical,
    place,
    run_search,
    summary,
    table_rows,
)


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


@pytest.fixture(scope="module")
def placed():
    """Four grid points and the paper's, placed at 2x B0 (32 px) with a 5% FLOPs tolerance."""
    b0 = spec_for_name("efficientnet_b0")
    grid = SearchConfig(alpha=GridAxis(1.0, 1.2, 0.1), beta=GridAxis(1.1, 1.1, 0.1), gamma=GridAxis(1.2, 1.3, 0.1))
    candidates = [c for c in grid_candidates(grid) if c.coefficients in
                  {(1.0, 1.1, 1.3), (1.1, 1.1, 1.2), (1.2, 1.1, 1.2), (1.2, 1.1, 1.15)}]
    assert len(candidates) == 4
    return b0, place(candidates, b0, 2.0, 0.05)


def test_every_feasible_candidate_lies_within_tolerance_of_the_target(placed):
    b0, placed = placed
    b0_flops = count_flops(b0)
    for p in placed:
        assert p.flops == count_flops(p.spec)  # the one counter, on the network that would be trained
        assert p.flops_ratio == pytest.approx(p.flops / b0_flops)
        assert p.feasible == (abs(p.flops_ratio / 2.0 - 1) <= 0.05)
        assert p.spec.dropout == target_dropout(2.0) and p.spec.drop_path_rate == b0.drop_path_rate
        assert p.architecture == architecture(p.spec)
    by_key = {p.candidate.key: p for p in placed}
    # (1.0, 1.1, 1.3) cannot get nearer than 2.21x: one pixel more or one step of channels overshoots
    assert not by_key["a1_b1.1_g1.3"].feasible and by_key["a1_b1.1_g1.3"].flops_ratio > 2.1
    assert all(by_key[k].feasible for k in ("a1.1_b1.1_g1.2", "a1.2_b1.1_g1.2", "a1.2_b1.1_g1.15"))
    # matched phi, not phi = 1: alpha > 1 adds a block to every stage at once, so phi stays small
    assert all(0 < p.phi < 0.5 for p in placed if p.feasible)


def test_identical_networks_are_grouped_and_trained_once(placed, tmp_path):
    _, placed = placed
    groups = group_identical(placed)
    keys = [[p.candidate.key for p in g] for g in groups]
    # alpha 1.1 and 1.2 both round to one more block per stage: the same network at their matched phi
    assert keys == [["a1.1_b1.1_g1.2", "a1.2_b1.1_g1.2"], ["a1.2_b1.1_g1.15"]]
    assert "a1_b1.1_g1.3" not in sum(keys, [])  # infeasible: not trained
    trainer = FakeTrainer()
    records = run_search(groups, trainer, tmp_path, "s", log=None)
    assert [p.candidate.key for p in trainer.trained] == ["a1.1_b1.1_g1.2", "a1.2_b1.1_g1.15"]
    chosen = choose(groups, records)
    rows = {(r["alpha"], r["gamma"]): r for r in table_rows(placed, groups, records, chosen)}
    assert rows[(1.1, 1.2)]["status"] == "trained"
    assert rows[(1.2, 1.2)]["status"] == "same network as a1.1_b1.1_g1.2"
    assert rows[(1.2, 1.2)]["val_top1"] == rows[(1.1, 1.2)]["val_top1"]
    assert rows[(1.0, 1.3)]["status"] == "infeasible" and rows[(1.0, 1.3)].get("val_top1") is None
    assert sum(r["chosen"] for r in rows.values()) == 1


def _fake(key_coefficients, architecture, feasible=True, flops=100):
    c = Candidate(*key_coefficients)
    return Placed(candidate=c, phi=0.5, spec=spec_for_name("efficientnet_b0"), flops=flops, flops_ratio=2.0,
                  architecture=architecture, built={"depth": 1.0, "width": 1.0, "resolution": 1.0}, feasible=feasible)


def test_choice_among_identical_networks_is_stated_not_identified():
    placed = [_fake((1.1, 1.1, 1.2), "net-a"), _fake((1.2, 1.1, 1.2), "net-a"), _fake((1.2, 1.1, 1.15), "net-b"),
              _fake((1.0, 1.1, 1.3), "net-c", feasible=False)]
    groups = group_identical(placed)
    records = {"net-a": {"val_top1": 0.6}, "net-b": {"val_top1": 0.5}}
    chosen = choose(groups, records)
    assert chosen[0].candidate.coefficients == (1.1, 1.1, 1.2)  # |1.917 - 2| < |2.091 - 2|
    result = summary(placed, groups, records, chosen, 2.0, 0.05)
    assert (result["alpha"], result["beta"], result["gamma"]) == (1.1, 1.1, 1.2)
    assert result["same_network"] == [{"alpha": 1.2, "beta": 1.1, "gamma": 1.2}]
    assert result["identifiable"].startswith("no:") and "constraint nearest 2" in result["identifiable"]
    assert result["infeasible"] == ["a1_b1.1_g1.3"] and result["networks_trained"] == 2 and result["candidates"] == 4
    assert result["paper"]["val_top1"] == 0.5 and result["paper"]["feasible"] is True
    # ties between different networks: the constraint nearest 2
    tied = {"net-a": {"val_top1": 0.5}, "net-b": {"val_top1": 0.5}}
    assert choose(groups, tied)[0].candidate.is_paper  # |1.9998 - 2| beats |1.917 - 2|
    with pytest.raises(SearchError, match="flops_tolerance"):
        choose([], {})


class FakeTrainer:
    def __init__(self, fail_on: int | None = None):
        self.trained, self.fail_on = [], fail_on

    def __call__(self, placed):
        if self.fail_on is not None and len(self.trained) == self.fail_on:
            raise KeyboardInterrupt("interrupted")
        self.trained.append(placed)
        return {"val_top1": placed.candidate.alpha / 10, "params": 1, "train_time_s": 0.0}


def test_resume_skips_finished_networks_and_prints_progress(tmp_path):
    groups = [[_fake((1.0 + i / 10, 1.1, 1.2), f"net-{i}")] for i in range(6)]
    first = FakeTrainer(fail_on=4)
    with pytest.raises(KeyboardInterrupt):
        run_search(groups, first, tmp_path, "settings-1", log=None)
    assert len(first.trained) == 4 and len(list(tmp_path.glob("*.json"))) == 4
    second, lines = FakeTrainer(), []
    records = run_search(groups, second, tmp_path, "settings-1", log=lines.append)
    assert [p.architecture for p in second.trained] == ["net-4", "net-5"]  # only the unfinished ones
    assert list(records) == [f"net-{i}" for i in range(6)]
    assert json.loads((tmp_path / "net-0.json").read_text())["val_top1"] == pytest.approx(0.1)
    assert sum("finished earlier" in line for line in lines) == 4
    assert any(line.startswith("candidate 5/6") and "2 to train" in line for line in lines)
    assert any(line.startswith("candidate 6/6") and "ETA" in line for line in lines)  # from the time of the 5th
    third = FakeTrainer()
    run_search(groups, third, tmp_path, "settings-1", log=None)
    assert third.trained == []
    changed = FakeTrainer()
    run_search(groups, changed, tmp_path, "settings-2", log=None)  # other settings: nothing reused
    assert len(changed.trained) == 6
