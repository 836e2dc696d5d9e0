"""The (alpha, beta, gamma) grid: constraint, placement at matched FLOPs, identical networks once, resumable loop."""

import json

import numpy as np
import pytest

from effnet.config import GridAxis, SearchConfig
from effnet.models import architecture, count_flops, spec_for_name
from effnet.scaling import target_dropout
from effnet.search import (
    DECISION_RULE,
    Candidate,
    Placed,
    SearchError,
    decide,
    distinctness,
    grid_candidates,
    group_identical,
    place,
    run_search,
    summary,
    table_rows,
)

IMAGES = 2_000  # validation images of the fake networks


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
    cfg = SearchConfig(
        alpha=GridAxis(1.0, 1.1, 0.1), beta=GridAxis(1.0, 1.0, 0.1), gamma=GridAxis(1.0, 1.0, 0.1), tolerance=0.05
    )
    with pytest.raises(SearchError, match="no point with .* <= 0.05"):
        grid_candidates(cfg)


@pytest.fixture(scope="module")
def placed():
    """Four grid points and the paper's, placed at 2x B0 (32 px) with a 5% FLOPs tolerance."""
    b0 = spec_for_name("efficientnet_b0")
    grid = SearchConfig(alpha=GridAxis(1.0, 1.2, 0.1), beta=GridAxis(1.1, 1.1, 0.1), gamma=GridAxis(1.2, 1.3, 0.1))
    candidates = [
        c
        for c in grid_candidates(grid)
        if c.coefficients in {(1.0, 1.1, 1.3), (1.1, 1.1, 1.2), (1.2, 1.1, 1.2), (1.2, 1.1, 1.15)}
    ]
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
    records = run_search(groups, trainer, tmp_path, "s", seeds=2, log=None)
    # each distinct network trained with both seeds, the identical one never
    assert [(p.candidate.key, k) for p, k in trainer.trained] == [
        ("a1.1_b1.1_g1.2", 0),
        ("a1.1_b1.1_g1.2", 1),
        ("a1.2_b1.1_g1.15", 0),
        ("a1.2_b1.1_g1.15", 1),
    ]
    assert all(r["val_correct"].shape == (2, IMAGES) for r in records.values())
    decision = decide(groups, records)
    rows = {(r["alpha"], r["gamma"]): r for r in table_rows(placed, groups, records, decision)}
    assert rows[(1.1, 1.2)]["status"] == "trained" and rows[(1.1, 1.2)]["seeds"] == 2
    assert rows[(1.2, 1.2)]["status"] == "same network as a1.1_b1.1_g1.2"
    assert rows[(1.2, 1.2)]["val_top1"] == rows[(1.1, 1.2)]["val_top1"]
    assert rows[(1.0, 1.3)]["status"] == "infeasible" and rows[(1.0, 1.3)].get("val_top1") is None
    assert sum(r["chosen"] for r in rows.values()) == 1


def test_distinctness_counts_networks_and_material_differences(placed):
    _, placed = placed
    row = distinctness(placed, 2.0)
    assert (row["candidates"], row["feasible"], row["distinct"]) == (4, 3, 2)
    # the two networks at 2x differ only in the head's channels (h1288 against h1296): one material cluster
    assert row["material"] == 1 and row["largest_cluster"] == 3 and row["paper_feasible"] is True
    assert row["depth_min"] == row["depth_max"] == pytest.approx(23 / 16, abs=1e-4)
    assert row["width_max"] - row["width_min"] < 0.01


def _fake(key_coefficients, architecture, feasible=True, flops=100):
    c = Candidate(*key_coefficients)
    return Placed(
        candidate=c,
        phi=0.5,
        spec=spec_for_name("efficientnet_b0"),
        flops=flops,
        flops_ratio=2.0,
        architecture=architecture,
        built={"depth": 1.0, "width": 1.0, "resolution": 1.0},
        feasible=feasible,
    )


def _records(accuracies: dict[str, tuple[float, ...]], images: int = IMAGES, nested: bool = True) -> dict[str, dict]:
    """Fake search records: per architecture, one accuracy per seed, right on a seeded share of the images.

    nested: every network is right on the easiest images first, so a higher accuracy is right
    wherever a lower one is (no disagreement beyond the difference); else each network and
    seed is right on its own random images (disagreement as large as it gets)."""
    rng = np.random.default_rng(0)
    ease = rng.permutation(images)
    out = {}
    for arch, per_seed in accuracies.items():
        correct = np.array([(ease if nested else rng.permutation(images)) < round(a * images) for a in per_seed])
        out[arch] = {"architecture": arch, "val_correct": correct, "val_top1": float(correct.mean())}
    return out


def test_choice_among_identical_networks_is_stated_not_identified():
    placed = [
        _fake((1.1, 1.1, 1.2), "net-a"),
        _fake((1.2, 1.1, 1.2), "net-a"),
        _fake((1.2, 1.1, 1.15), "net-b"),
        _fake((1.0, 1.1, 1.3), "net-c", feasible=False),
    ]
    groups = group_identical(placed)
    records = _records({"net-a": (0.60, 0.61, 0.59), "net-b": (0.50, 0.51, 0.49)})  # 10 points better, 3 seeds
    decision = decide(groups, records)
    assert decision.outcome == "searched" and decision.chosen[0].candidate.coefficients == (1.1, 1.1, 1.2)
    assert "beats the paper's point by +10.00 points" in decision.reason
    result = summary(placed, groups, records, decision, 2.0, 0.05, 3)
    assert (result["alpha"], result["beta"], result["gamma"]) == (1.1, 1.1, 1.2)  # |1.917 - 2| < |2.091 - 2|
    assert result["decision"] == "searched" and result["rule"] == DECISION_RULE
    assert result["same_network"] == [{"alpha": 1.2, "beta": 1.1, "gamma": 1.2}]
    assert result["infeasible"] == ["a1_b1.1_g1.3"] and result["networks_trained"] == 2 and result["candidates"] == 4
    assert result["paper"]["val_top1"] == pytest.approx(0.5) and result["paper"]["feasible"] is True
    json.dumps(result)  # metrics/search.json: plain JSON, no arrays
    net_a = next(n for n in result["networks"] if n["architecture"] == "net-a")
    assert net_a["val_top1_low"] < 0.60 < net_a["val_top1_high"] and net_a["seeds"] == 3
    assert net_a["distinguishable"] is True and net_a["low"] > 0.05


def test_no_winner_without_evidence_takes_the_papers_coefficients():
    """A network 0.5 points ahead, within seed and image noise, is not a winner: the paper's point is taken, and why."""
    placed = [_fake((1.4, 1.0, 1.2), "net-a"), _fake((1.2, 1.1, 1.15), "net-b"), _fake((1.0, 1.3, 1.1), "net-c")]
    groups = group_identical(placed)
    records = _records(
        {"net-a": (0.52, 0.49, 0.51), "net-b": (0.50, 0.51, 0.485), "net-c": (0.40, 0.41, 0.39)}, nested=False
    )
    decision = decide(groups, records)
    assert decision.outcome == "paper" and decision.chosen[0].candidate.is_paper
    assert decision.indistinguishable == ["net-b", "net-a"]  # net-c is told apart: worse
    assert "no network beats the paper's point after Holm's correction over 2 comparisons" in decision.reason
    assert decision.comparisons["net-a"]["low"] < 0 < decision.comparisons["net-a"]["high"]
    assert decision.comparisons["net-c"]["high"] < 0 and decision.comparisons["net-c"]["distinguishable"]
    result = summary(placed, groups, records, decision, 3.0, 0.05, 3)
    assert (result["alpha"], result["beta"], result["gamma"]) == (1.2, 1.1, 1.15) and result["decision"] == "paper"
    assert result["indistinguishable"] == [["a1.2_b1.1_g1.15"], ["a1.4_b1_g1.2"]]
    verdicts = {r["architecture"]: r["verdict"] for r in table_rows(placed, groups, records, decision)}
    assert verdicts == {
        "net-a": "not distinguishable from the paper's",
        "net-b": "paper's network",
        "net-c": "worse than the paper's",
    }
    # the same 10 points ahead of the paper's as in the test above is a winner here too
    clear = _records(
        {"net-a": (0.60, 0.59, 0.61), "net-b": (0.50, 0.51, 0.485), "net-c": (0.40, 0.41, 0.39)}, nested=False
    )
    assert decide(groups, clear).outcome == "searched"


def test_without_the_papers_point_the_search_says_it_cannot_decide():
    placed = [_fake((1.4, 1.0, 1.2), "net-a"), _fake((1.2, 1.1, 1.15), "net-b", feasible=False)]
    groups = group_identical(placed)
    decision = decide(groups, _records({"net-a": (0.6, 0.6, 0.6)}))
    assert decision.outcome == "paper" and decision.chosen == [] and "cannot decide" in decision.reason
    result = summary(placed, groups, _records({"net-a": (0.6, 0.6, 0.6)}), decision, 4.0, 0.05, 3)
    assert (result["alpha"], result["beta"], result["gamma"]) == (1.2, 1.1, 1.15)
    assert result["paper"]["feasible"] is False
    with pytest.raises(SearchError, match="flops_tolerance"):
        decide([], {})


class FakeTrainer:
    def __init__(self, fail_on: int | None = None):
        self.trained, self.fail_on = [], fail_on

    def __call__(self, placed, k):
        if self.fail_on is not None and len(self.trained) == self.fail_on:
            raise KeyboardInterrupt("interrupted")
        self.trained.append((placed, k))
        right = round(placed.candidate.alpha / 10 * IMAGES) + k
        return {
            "val_top1": right / IMAGES,
            "val_correct": [1] * right + [0] * (IMAGES - right),
            "params": 1,
            "train_time_s": 0.0,
        }


def test_resume_skips_finished_networks_and_prints_progress(tmp_path):
    groups = [[_fake((1.0 + i / 10, 1.1, 1.2), f"net-{i}")] for i in range(3)]
    first = FakeTrainer(fail_on=4)  # 3 networks x 2 seeds: stops after net-1's second seed
    with pytest.raises(KeyboardInterrupt):
        run_search(groups, first, tmp_path, "settings-1", seeds=2, log=None)
    assert len(first.trained) == 4 and len(list(tmp_path.glob("*.json"))) == 4
    second, lines = FakeTrainer(), []
    records = run_search(groups, second, tmp_path, "settings-1", seeds=2, log=lines.append)
    assert [(p.architecture, k) for p, k in second.trained] == [("net-2", 0), ("net-2", 1)]  # only the unfinished ones
    assert list(records) == [f"net-{i}" for i in range(3)]
    assert json.loads((tmp_path / "net-0_seed1.json").read_text())["val_top1"] == pytest.approx(0.1 + 1 / IMAGES)
    assert records["net-0"]["val_top1"] == pytest.approx(0.1 + 0.5 / IMAGES)  # mean over the two seeds
    assert sum("finished earlier" in line for line in lines) == 4
    assert any(line.startswith("candidate 3/3 seed 1/2") and "2 to train" in line for line in lines)
    # from the time of the 5th
    assert any(line.startswith("candidate 3/3 seed 2/2") and "ETA" in line for line in lines)
    third = FakeTrainer()
    run_search(groups, third, tmp_path, "settings-1", seeds=2, log=None)
    assert third.trained == []
    changed = FakeTrainer()
    run_search(groups, changed, tmp_path, "settings-2", seeds=2, log=None)  # other settings: nothing reused
    assert len(changed.trained) == 6
    more = FakeTrainer()
    run_search(groups, more, tmp_path, "settings-2", seeds=3, log=None)  # one more seed: only it is trained
    assert [k for _, k in more.trained] == [2, 2, 2]
