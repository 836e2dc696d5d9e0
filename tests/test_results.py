"""The small per-model result files: predictions round trip, and the table built from the records alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from effnet.results import (
    COLUMNS,
    Predictions,
    collect,
    images_id,
    in_run,
    load_predictions,
    predictions_path,
    save_predictions,
)
from effnet.study import models_at

ROOT = Path(__file__).resolve().parents[1]


def record(model: str, group: str, strategy: str = "", target: float | str = "", **values) -> dict:
    row = {**{key: 0 for key in COLUMNS}, "seeds": 1}
    return {**row, "model": model, "group": group, "strategy": strategy, "target": target, **values}


def test_predictions_round_trip_small_and_identified(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 100, 10_000)
    images = rng.integers(0, 256, (10_000, 32, 32, 3), dtype=np.uint8)
    top1 = rng.integers(0, 100, (1, 10_000))
    saved = Predictions(
        top1=top1, top1_ema=top1[:, ::-1].copy(), labels=labels, test_set=images_id(labels, images), has_ema=True
    )
    path = predictions_path(tmp_path / "predictions", "scaling/depth_2x")
    assert path == tmp_path / "predictions" / "scaling" / "depth_2x.npz"
    save_predictions(path, saved)
    loaded = load_predictions(path)
    np.testing.assert_array_equal(loaded.top1, top1)
    np.testing.assert_array_equal(loaded.top1_ema, top1[:, ::-1])
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.test_set == saved.test_set and loaded.has_ema is True
    np.testing.assert_array_equal(loaded.correct(ema=False), top1 == labels)
    assert path.stat().st_size < 30_000  # random classes, the worst case for compression: still small
    # the id tells other images, or another order, apart
    assert images_id(labels, images) != images_id(labels, images[::-1])
    assert images_id(labels) != images_id(labels[::-1])
    assert [p.name for p in path.parent.iterdir()] == ["depth_2x.npz"]  # no temporary file left


def test_a_file_that_is_not_predictions_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "x.npz"
    np.savez(bad, something=np.zeros(3))
    with pytest.raises(ValueError, match="x.npz: not a predictions file"):
        load_predictions(bad)
    with pytest.raises(ValueError, match="do not match"):
        save_predictions(tmp_path / "y.npz", Predictions(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros(4), "id", False))
    assert not (tmp_path / "y.npz").exists()


def names(flops_targets: list[float]) -> frozenset[str]:
    """The run's model names (effnet/study.py) with these `scaling.flops_targets`."""
    return frozenset(m.name for m in models_at(flops_targets))


def test_in_run() -> None:
    assert in_run(record("efficientnet_b0", "matrix"), names([2]))
    assert in_run(record("efficientnet_phi", "phi"), names([2]))
    assert in_run(record("scaling/baseline", "scaling", "baseline", 1.0), names([2]))
    assert in_run(record("scaling/depth_2x", "scaling", "depth", 2.0), names([2, 4]))
    assert not in_run(record("scaling/depth_8x", "scaling", "depth", 8.0), names([2, 4]))  # a target no longer listed
    assert not in_run(record("mine", "other"), names([2]))


def write_records(metrics: Path, rows: list[dict]) -> None:
    for row in rows:
        path = metrics / f"{row['model']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row))


def test_collect_builds_the_table_of_this_run_from_the_records(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics" / "models"
    old = record("resnet50", "matrix")
    del old["seeds"]  # a record written before train.seeds existed
    write_records(
        metrics,
        [
            record("scaling/depth_8x", "scaling", "depth", 8.0),
            record("efficientnet_b0", "matrix", seeds=3),
            old,
            record("scaling/depth_2x", "scaling", "depth", 2.0),
        ],
    )
    notes = []
    rows = collect(metrics, tmp_path / "metrics" / "models.csv", names([2.0]), log=notes.append)
    assert [r["model"] for r in rows] == ["efficientnet_b0", "resnet50", "scaling/depth_2x"]
    assert [r["seeds"] for r in rows] == [3, 1, 1]
    assert notes == ["left out records of models that no stage of this run declares: scaling/depth_8x"]
    lines = (tmp_path / "metrics" / "models.csv").read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 4


def test_collect_rejects_a_broken_record_and_an_empty_directory(tmp_path: Path) -> None:
    metrics = tmp_path / "m"
    with pytest.raises(FileNotFoundError, match="no model records"):
        collect(metrics, tmp_path / "t.csv", names([2]))
    write_records(metrics, [{"model": "efficientnet_b0", "group": "matrix"}])
    with pytest.raises(ValueError, match="efficientnet_b0.json: a model record lacks name, strategy"):
        collect(metrics, tmp_path / "t.csv", names([2]))
    assert not (tmp_path / "t.csv").exists()


def test_collect_stage_imports_no_torch(tmp_path: Path) -> None:
    """The summary rebuilds on a machine without weights: the stage reads the JSON files only."""
    write_records(tmp_path / "metrics" / "models", [record("efficientnet_b0", "matrix")])
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    stage = str(ROOT / "stages" / "collect.py")
    code = (
        f"import runpy, sys; sys.argv = ['collect']; collect = runpy.run_path({stage!r}); "
        "code = collect['main'](); assert 'torch' not in sys.modules, 'torch imported'; sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "metrics" / "models.csv").read_text().splitlines()[1].startswith("efficientnet_b0,")

    (tmp_path / "params.yaml").write_text("scaling: {}\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "collect.py")], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stderr.startswith("error: params.yaml")
