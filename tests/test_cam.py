"""Grad-CAM maps (paper Figure 7) and their faithfulness, on synthetic data with tiny weight files."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_evaluate import TINY, one_thread, stage_env, write_params, write_weights  # noqa: F401 (one_thread: autouse)

from effnet.cam import (
    TABLE_COLUMNS,
    AtResolution,
    cam_images,
    check_maps,
    compute_cams,
    draw_model_maps,
    faithfulness,
    faithfulness_indices,
    figure_indices,
    load_cam_model,
    load_model_maps,
    maps_stage,
    normalised_images,
    save_model_maps,
    scaling_model,
)
from effnet.config import CamConfig
from effnet.data import DeviceLoader, load_meta, load_split
from effnet.models import build_model

ROOT = Path(__file__).resolve().parents[1]
STUDY = (
    ("baseline", None, 32),
    ("depth_2x", ("depth", 2.0), 32),
    ("width_2x", ("width", 2.0), 32),
    ("resolution_2x", ("resolution", 2.0), 44),
    ("compound_2x", ("compound", 2.0), 36),
)


def write_study(models: Path, skip: tuple[str, ...] = ()) -> None:
    """A scaling study of tiny networks at models/scaling/<name>/model.pt (with the `matched` record)."""
    for seed, (name, role, resolution) in enumerate(STUDY):
        if name in skip:
            continue
        matched = {"strategy": role[0], "target": role[1], "flops_ratio": role[1] * 1.02} if role else None
        write_weights(
            models / "scaling" / name / "model.pt",
            replace(TINY, name=name, resolution=resolution),
            seed=seed,
            extra={"matched": matched} if matched else None,
        )


@pytest.fixture(scope="module")
def test_images(prepared_data_dir: Path) -> tuple[torch.Tensor, np.ndarray]:
    meta, test = load_meta(prepared_data_dir), load_split(prepared_data_dir, "test")
    index = faithfulness_indices(len(test), 6, seed=0)
    return normalised_images(test.images[index], meta["mean"], meta["std"]), test.fine_labels[index]


def test_at_resolution_equals_the_loader_at_the_model_resolution(prepared_data_dir: Path) -> None:
    meta, test = load_meta(prepared_data_dir), load_split(prepared_data_dir, "test")
    model = build_model(replace(TINY, resolution=44)).eval()
    at_44 = next(
        iter(
            DeviceLoader(
                test.images[:8],
                test.fine_labels[:8],
                batch_size=8,
                train=False,
                mean=meta["mean"],
                std=meta["std"],
                resolution=44,
            )
        )
    )[0]
    at_32 = normalised_images(test.images[:8], meta["mean"], meta["std"])
    assert at_32.shape == (8, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(AtResolution(model)(at_32), model(at_44))


def test_image_choice_is_seeded_and_covers_distinct_classes() -> None:
    labels = np.repeat(np.arange(100), 3)
    first = figure_indices(labels, 6, seed=0)
    assert len(set(labels[first])) == 6
    assert np.array_equal(first, figure_indices(labels, 6, seed=0))
    assert not np.array_equal(first, figure_indices(labels, 6, seed=1))
    faithful = faithfulness_indices(len(labels), 50, seed=0)
    assert len(set(faithful)) == 50 and np.all(np.diff(faithful) > 0)
    assert len(faithfulness_indices(10, 50, seed=0)) == 10
    with pytest.raises(ValueError, match="cam.figure_images"):
        figure_indices(labels, 101, seed=0)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_maps_have_the_image_size_values_in_0_1_and_follow_the_weights(
    tmp_path: Path, test_images: tuple[torch.Tensor, np.ndarray], method: str
) -> None:
    images, labels = test_images
    spec = replace(TINY, resolution=44)  # a higher-resolution network still gives 32x32 maps
    first = load_cam_model(write_weights(tmp_path / "a.pt", spec, seed=0))
    second = load_cam_model(write_weights(tmp_path / "b.pt", spec, seed=1))
    maps = compute_cams(first, images, labels, method, batch_size=4)
    assert maps.shape == (len(images), 32, 32) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0 and maps.max() > 0.5  # normalised per image
    np.testing.assert_allclose(maps, compute_cams(first, images, labels, method), atol=1e-5)  # any batching
    assert np.abs(maps - compute_cams(second, images, labels, method)).mean() > 0.05  # other weights, other maps


def test_faithfulness_of_maps(tmp_path: Path, test_images: tuple[torch.Tensor, np.ndarray]) -> None:
    images, labels = test_images
    model = load_cam_model(write_weights(tmp_path / "a.pt", TINY))
    maps = compute_cams(model, images, labels, "gradcam")
    scores = faithfulness(model, images, labels, maps, seed=0, batch_size=4)
    assert set(scores) == {"road_morf", "road_lerf", "road_combined", "cam_mult_confidence_change"}
    assert all(np.isfinite(v) and -1.0 <= v <= 1.0 for v in scores.values())  # changes of a probability
    assert scores["road_combined"] == pytest.approx((scores["road_lerf"] - scores["road_morf"]) / 2)
    assert faithfulness(model, images, labels, maps, seed=0, batch_size=4) == scores  # the imputation noise is seeded


def test_scaling_model_reads_its_role_from_the_weights(tmp_path: Path) -> None:
    write_study(tmp_path / "models")
    depth = scaling_model(tmp_path / "models" / "scaling" / "depth_2x" / "model.pt", "scaling/depth_2x")
    assert (depth.model, depth.strategy, depth.target) == ("depth_2x", "depth", 2.0)
    assert depth.flops_ratio == pytest.approx(2.04)  # reached, from the `matched` record
    baseline = scaling_model(tmp_path / "models" / "scaling" / "baseline" / "model.pt", "scaling/baseline")
    assert (baseline.strategy, baseline.target, baseline.flops_ratio) == ("baseline", 1.0, 1.0)
    other = write_weights(tmp_path / "models" / "efficientnet_b0" / "model.pt", TINY)  # not part of the study
    assert scaling_model(other, "efficientnet_b0") is None


def test_each_scaling_model_has_a_maps_stage_of_dvc_yaml() -> None:
    assert maps_stage("scaling/baseline") == "cam_maps_b0"
    assert maps_stage("scaling/depth_4x") == "cam_maps@depth-4"
    assert maps_stage("scaling/compound_2.5x") == "cam_maps@compound-2.5"
    assert maps_stage("efficientnet_b0") is None and maps_stage("scaling/other_2x") is None


def test_model_maps_round_trip_and_check_the_params(tmp_path: Path, prepared_data_dir: Path) -> None:
    write_study(tmp_path / "models")
    cfg = CamConfig(methods=("gradcam",), figure_images=2, faithfulness_images=4, flops_target=2.0)
    images = cam_images(prepared_data_dir, cfg)
    model = scaling_model(tmp_path / "models" / "scaling" / "width_2x" / "model.pt", "scaling/width_2x")
    drawn = draw_model_maps(model, images, cfg, batch_size=4)
    assert set(drawn.entry) >= {"gradcam", "random", "top1", "confidence", "strategy", "flops_ratio"}
    assert drawn.maps["gradcam"].shape == (2, 32, 32) and drawn.probabilities.shape[0] == 2
    save_model_maps(tmp_path / "cams" / "scaling" / "width_2x.npz", drawn)
    read = load_model_maps(tmp_path / "cams" / "scaling" / "width_2x.npz")
    assert (read.model.model, read.model.strategy, read.title, read.entry) == (
        "width_2x",
        "width",
        drawn.title,
        drawn.entry,
    )
    np.testing.assert_allclose(read.maps["gradcam"], drawn.maps["gradcam"], atol=1e-3)  # stored as float16
    np.testing.assert_array_equal(read.figure_indices, images.figure_indices)
    check_maps(read, images, cfg)
    with pytest.raises(ValueError, match="methods gradcam\\+\\+ missing.*cam_maps"):
        check_maps(read, images, replace(cfg, methods=("gradcam", "gradcam++")))
    with pytest.raises(ValueError, match="other images"):
        check_maps(read, cam_images(prepared_data_dir, replace(cfg, seed=1)), cfg)
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.npz: not a maps file"):
        load_model_maps(tmp_path / "broken.npz")


def test_stages_write_maps_then_figures_metrics_and_table(
    tmp_path: Path, prepared_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stages import cam_maps

    write_study(tmp_path / "models", skip=("width_2x",))  # a missing column is drawn as such
    write_params(
        tmp_path,
        cam={"methods": ["gradcam", "gradcam++"], "figure_images": 3, "faithfulness_images": 6, "flops_target": 2.0},
        scaling={"flops_targets": [2.0]},
    )
    monkeypatch.chdir(tmp_path)
    for name in ("baseline", "depth_2x", "resolution_2x", "compound_2x"):
        assert cam_maps.main(["--model", f"scaling/{name}", "--data", str(prepared_data_dir)]) == 0
    assert cam_maps.main(["--model", "scaling/width_2x", "--data", str(prepared_data_dir)]) == 1
    assert "no such weights file" in capsys.readouterr().err
    write_weights(tmp_path / "models" / "efficientnet_b0" / "model.pt", TINY)
    assert cam_maps.main(["--model", "efficientnet_b0", "--data", str(prepared_data_dir)]) == 1
    assert "efficientnet_b0 is no model of the scaling study" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "cams" / "scaling").iterdir()) == [
        "baseline.npz",
        "compound_2x.npz",
        "depth_2x.npz",
        "resolution_2x.npz",
    ]  # nothing half-written
    (tmp_path / "cams" / "scaling" / "depth_4x.npz").write_bytes(b"")  # an earlier run's target: not read
    shutil.rmtree(tmp_path / "models")  # the cam stage needs no weights
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "cam.py"), "--data", str(prepared_data_dir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=stage_env(),
    )
    assert done.returncode == 0, done.stderr
    for method in ("gradcam", "gradcam++"):
        assert (tmp_path / "plots" / "cam" / f"{method}.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((tmp_path / "metrics" / "cam.json").read_text())
    assert list(metrics) == ["baseline", "depth_2x", "resolution_2x", "compound_2x"]  # the figure's order
    for entry in metrics.values():
        assert entry["images"] == 6
        assert set(entry) >= {"gradcam", "gradcam++", "random", "top1", "strategy", "flops_ratio"}
    assert metrics["depth_2x"]["flops_ratio"] == pytest.approx(2.04)
    with (tmp_path / "plots" / "cam_faithfulness.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(TABLE_COLUMNS) and len(rows) == 4 * 3


def test_stage_without_a_study_still_writes_its_outputs(tmp_path: Path, prepared_data_dir: Path) -> None:
    params = write_params(tmp_path, cam={"methods": ["gradcam"], "figure_images": 2, "faithfulness_images": 4})
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "cam.py"), "--data", str(prepared_data_dir), "--params", str(params)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=stage_env(),
    )
    assert done.returncode == 0, done.stderr
    assert "note: no maps of the scaling study" in done.stdout
    assert (tmp_path / "plots" / "cam" / "gradcam.png").is_file()
    assert json.loads((tmp_path / "metrics" / "cam.json").read_text()) == {}
    assert (tmp_path / "plots" / "cam_faithfulness.csv").read_text().count("\n") == 1
