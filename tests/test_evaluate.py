"""The evaluate stage on synthetic data with tiny, randomly initialised weight files.

`write_weights` and `TINY` are shared with the plots, cam and report tests: a weights file
in the format of `effnet.weights.save_weights`, made without training.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from effnet.config import EvaluateConfig
from effnet.data import DeviceLoader, load_meta, load_split
from effnet.evaluate import (
    COLUMNS,
    accuracy_keys,
    evaluate_one,
    find_models,
    load_eval_data,
    predict,
    scaling_role,
    topk_accuracy,
    trained_model,
)
from effnet.models import ModelSpec, build_model
from effnet.plots import read_table
from effnet.results import collect, images_id, load_predictions
from effnet.study import models_at
from effnet.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
TINY = ModelSpec(name="tiny", arch="efficientnet", resolution=32, width=0.25, depth=0.25)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the tiny networks gain nothing from two, and lose a lot when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def stage_env() -> dict[str, str]:
    """The environment for running a stage script in a subprocess, on one thread (see `one_thread`)."""
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1"}


@torch.no_grad()
def calibrated(model: nn.Module) -> nn.Module:
    """Set BatchNorm's running statistics from one batch of noise, as if trained.

    A freshly built EfficientNet in eval mode (running mean 0, variance 1) has activations
    that vanish with depth and scores equal for every image; after this its predictions and
    maps differ from image to image.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average of the batches seen: here, one
    model.train()
    model(torch.randn(64, 3, model.resolution, model.resolution))
    return model.eval()


def write_weights(path: Path, spec: ModelSpec, *, seed: int = 0, ema: bool = True, extra: dict | None = None) -> Path:
    """A `save_weights`-format file of `spec`, randomly initialised from `seed` (EMA: another draw), calibrated."""
    torch.manual_seed(seed)
    model = calibrated(build_model(spec))
    ema_model = calibrated(build_model(spec)) if ema else None
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "spec": spec.to_dict(),
            "state_dict": model.state_dict(),
            "ema_state_dict": ema_model.state_dict() if ema_model is not None else None,
            "metrics": {"val/top1": 0.01, "val/top1_ema": 0.01},
            "history": [{"epoch": 1, "val/top1": 0.01}],
            "train_time_s": 12.5,
            "train_config": {"epochs": 1, "drop_path_rate": 0.2},
            **(extra or {}),
        },
        path,
    )
    return path


def write_params(root: Path, name: str = "params.yaml", **sections: dict) -> Path:
    """params.yaml of the project with `sections` overriding single keys, e.g. evaluate={'batch_size': 64}."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    path = root / name
    path.write_text(yaml.safe_dump(params))
    return path


def test_find_models_groups_and_scaling_roles(tmp_path: Path) -> None:
    for name in (
        "efficientnet_b0",
        "efficientnet_b0/seed1",
        "efficientnet_b0/seed2",
        "resnet50",
        "efficientnet_phi",
        "scaling/baseline",
        "scaling/depth_2x",
        "mine",
    ):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "model.pt").touch()
    found = {m.model: m for m in find_models(tmp_path)}
    # seed<k>/ below a model is that model's seed k (train.seeds), not a model of its own
    assert {name: m.group for name, m in found.items()} == {
        "efficientnet_b0": "matrix",
        "resnet50": "matrix",
        "efficientnet_phi": "phi",
        "scaling/baseline": "scaling",
        "scaling/depth_2x": "scaling",
        "mine": "other",
    }
    assert found["efficientnet_b0"].weights == tuple(
        tmp_path / p
        for p in ("efficientnet_b0/model.pt", "efficientnet_b0/seed1/model.pt", "efficientnet_b0/seed2/model.pt")
    )
    assert found["resnet50"].weights == (tmp_path / "resnet50" / "model.pt",)
    assert trained_model(tmp_path, "efficientnet_b0") == found["efficientnet_b0"]
    with pytest.raises(FileNotFoundError, match="train the model first"):
        trained_model(tmp_path, "efficientnet_b1")
    assert scaling_role("scaling/depth_2x", {}) == ("depth", 2.0)
    assert scaling_role("scaling/baseline", {}) == ("baseline", 1.0)
    # the weights file's own record wins over the directory name (e.g. 'depth_2.0x' from dvc.yaml's matrix)
    assert scaling_role("scaling/x", {"matched": {"strategy": "width", "target": 4.0, "flops_ratio": 4.1}}) == (
        "width",
        4.0,
    )


def test_topk_accuracy() -> None:
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    assert topk_accuracy(probs, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(probs, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(probs, labels, 5) == 1.0  # k beyond the classes: every label is in


class LeftHalf(nn.Module):
    """Scores from the left half of the image only: not flip-invariant."""

    resolution = 32

    def __init__(self, mirror_invariant: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3 * 32 * 16, 100)
        self.mirror_invariant = mirror_invariant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mirror_invariant:
            x = (x + x.flip(-1)) / 2
        return self.linear(x[..., :16].flatten(1))


def test_flip_tta_averages_the_mirrored_images(prepared_data_dir: Path) -> None:
    meta, split = load_meta(prepared_data_dir), load_split(prepared_data_dir, "test")
    loader = DeviceLoader(
        split.images, split.fine_labels, batch_size=64, train=False, mean=meta["mean"], std=meta["std"]
    )
    model = LeftHalf().eval()
    probs, flipped, labels = predict(model, loader)
    x = torch.cat([images for images, _ in loader])
    with torch.no_grad():
        expected = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
    torch.testing.assert_close(flipped, expected)
    assert not torch.allclose(flipped, probs)  # the mirror image changed the scores
    assert torch.equal(labels, torch.as_tensor(split.fine_labels))

    probs, flipped, _ = predict(LeftHalf(mirror_invariant=True).eval(), loader)
    torch.testing.assert_close(flipped, probs)  # a mirror-invariant network gains nothing from flipping


@torch.no_grad()
def direct_top1(weights: Path, data_dir: Path, *, ema: bool) -> np.ndarray:
    """The predicted class of every test image, computed here directly from the weights file."""
    meta, split = load_meta(data_dir), load_split(data_dir, "test")
    model = load_weights(weights, ema=ema)
    loader = DeviceLoader(
        split.images,
        split.fine_labels,
        batch_size=64,
        train=False,
        mean=meta["mean"],
        std=meta["std"],
        resolution=model.resolution,
    )
    return torch.cat([model(images).argmax(1) for images, _ in loader]).numpy()


def test_evaluate_one_writes_the_record_and_the_predictions(tmp_path: Path, prepared_data_dir: Path) -> None:
    models = tmp_path / "models"
    write_weights(models / "efficientnet_b0" / "model.pt", replace(TINY, name="efficientnet_b0"), seed=0)
    write_weights(
        models / "scaling" / "resolution_2x" / "model.pt",
        replace(TINY, name="resolution_2x", resolution=36),
        seed=1,
        ema=False,
        extra={"matched": {"strategy": "resolution", "target": 2.0, "flops_ratio": 1.9}},
    )
    seen = []
    cfg = EvaluateConfig(batch_size=64, throughput_batches=1, images_per_class=0)
    rows = [
        evaluate_one(
            trained_model(models, name),
            prepared_data_dir,
            cfg,
            metrics_dir=tmp_path / "metrics" / "models",
            predictions_dir=tmp_path / "predictions",
            log=seen.append,
        )
        for name in ("efficientnet_b0", "scaling/resolution_2x")
    ]
    assert len(seen) == 2

    test = load_split(prepared_data_dir, "test")
    n_val, n_test = len(load_split(prepared_data_dir, "val")), len(test)
    for row in rows:
        # every image once, per split
        assert row["val/images"] == n_val and row["test/images"] == n_test
        for split in ("val", "test"):
            for key in accuracy_keys(split):
                assert 0.0 <= row[key] <= 1.0
                if "top5" in key:
                    assert row[key] >= row[key.replace("top5", "top1")]
        assert row["params"] > 0 and row["flops"] > 0 and row["throughput_images_per_s"] > 0
        assert row["train_time_s"] == 12.5 and row["epochs"] == 1 and row["seeds"] == 1
        on_disk = json.loads((tmp_path / "metrics" / "models" / f"{row['model']}.json").read_text())
        assert set(on_disk) == set(COLUMNS)

        # the predictions: one per test image in the split's order, from the raw and the EMA weights
        predictions = load_predictions(tmp_path / "predictions" / f"{row['model']}.npz")
        weights = models / row["model"] / "model.pt"
        assert predictions.top1.shape == predictions.top1_ema.shape == (1, n_test)
        np.testing.assert_array_equal(predictions.labels, test.fine_labels)
        np.testing.assert_array_equal(predictions.top1[0], direct_top1(weights, prepared_data_dir, ema=False))
        np.testing.assert_array_equal(predictions.top1_ema[0], direct_top1(weights, prepared_data_dir, ema=True))
        assert predictions.correct(ema=True).mean() == pytest.approx(row["test/top1_ema"])
        assert predictions.correct(ema=False).mean() == pytest.approx(row["test/top1"])
        assert predictions.test_set == images_id(test.fine_labels, test.images)
        with np.load(tmp_path / "predictions" / f"{row['model']}.npz") as f:
            assert f["top1"].dtype == np.uint8  # small: 100 classes fit a byte

    b0, scaled = rows
    assert (b0["group"], b0["strategy"], b0["has_ema"]) == ("matrix", "", True)
    assert (scaled["group"], scaled["strategy"], scaled["target"], scaled["resolution"]) == (
        "scaling",
        "resolution",
        2.0,
        36,
    )
    assert scaled["test/top1_ema"] == scaled["test/top1"]  # no EMA in the file: the raw weights stand in
    assert not load_predictions(tmp_path / "predictions" / "scaling" / "resolution_2x.npz").has_ema

    # the table, from the two records alone
    collect(
        tmp_path / "metrics" / "models",
        tmp_path / "metrics" / "models.csv",
        [m.name for m in models_at([2])],
        log=seen.append,
    )
    with (tmp_path / "metrics" / "models.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == ["efficientnet_b0", "scaling/resolution_2x"]
    assert list(table[0]) == list(COLUMNS)
    assert read_table(tmp_path / "metrics" / "models.csv")[1]["target"] == 2.0


def test_every_seed_is_evaluated(tmp_path: Path, prepared_data_dir: Path) -> None:
    """With train.seeds = 2: accuracies are the mean of the two networks', predictions hold both."""
    spec = replace(TINY, name="efficientnet_b0")
    for seed, path in enumerate(("model.pt", "seed1/model.pt")):
        write_weights(tmp_path / "models" / "efficientnet_b0" / path, spec, seed=seed, ema=False)
    cfg = EvaluateConfig(batch_size=64, throughput_batches=1, images_per_class=0)
    single = [
        evaluate_one(
            replace(trained_model(tmp_path / "models", "efficientnet_b0"), seeds=(weights,)),
            prepared_data_dir,
            cfg,
            metrics_dir=tmp_path / f"m{k}",
            predictions_dir=tmp_path / f"p{k}",
            log=lambda *_: None,
        )
        for k, weights in enumerate(trained_model(tmp_path / "models", "efficientnet_b0").weights)
    ]
    both = evaluate_one(
        trained_model(tmp_path / "models", "efficientnet_b0"),
        prepared_data_dir,
        cfg,
        metrics_dir=tmp_path / "m",
        predictions_dir=tmp_path / "p",
        log=lambda *_: None,
    )
    assert both["seeds"] == 2
    for key in ("val/top1", "test/top1", "test/top5_flip"):
        assert both[key] == pytest.approx((single[0][key] + single[1][key]) / 2)
    predictions = load_predictions(tmp_path / "p" / "efficientnet_b0.npz")
    assert predictions.top1.shape == (2, len(load_split(prepared_data_dir, "test")))
    for k in range(2):
        np.testing.assert_array_equal(
            predictions.top1[k], load_predictions(tmp_path / f"p{k}" / "efficientnet_b0.npz").top1[0]
        )
    assert not np.array_equal(predictions.top1[0], predictions.top1[1])  # two different networks


def test_images_per_class_evaluates_a_stratified_subset(tmp_path: Path, prepared_data_dir: Path) -> None:
    write_weights(
        tmp_path / "models" / "efficientnet_b0" / "model.pt", replace(TINY, name="efficientnet_b0"), ema=False
    )
    cfg = EvaluateConfig(batch_size=50, throughput_batches=1, images_per_class=1)
    row = evaluate_one(
        trained_model(tmp_path / "models", "efficientnet_b0"),
        prepared_data_dir,
        cfg,
        metrics_dir=tmp_path / "m",
        predictions_dir=tmp_path / "p",
        log=lambda *_: None,
    )
    assert row["val/images"] == row["test/images"] == 100
    test = load_eval_data(prepared_data_dir, 1).splits["test"]
    predictions = load_predictions(tmp_path / "p" / "efficientnet_b0.npz")
    assert predictions.top1.shape == (1, 100)
    # the subset's own id: not to be compared with predictions on all the images
    assert predictions.test_set == images_id(test.fine_labels, test.images)
    full = load_split(prepared_data_dir, "test")
    assert predictions.test_set != images_id(full.fine_labels, full.images)


def test_stage_runs_and_rejects_bad_params(tmp_path: Path, prepared_data_dir: Path) -> None:
    write_weights(tmp_path / "models" / "resnet50" / "model.pt", replace(TINY, name="resnet50"), ema=False)
    params = write_params(tmp_path, evaluate={"batch_size": 100, "throughput_batches": 1})
    args = [
        sys.executable,
        str(ROOT / "stages" / "evaluate.py"),
        "--model",
        "resnet50",
        "--params",
        str(params),
        "--data",
        str(prepared_data_dir),
        "--models",
        str(tmp_path / "models"),
        "--metrics",
        str(tmp_path / "metrics" / "models"),
        "--predictions",
        str(tmp_path / "predictions"),
    ]
    done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=stage_env())
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "metrics" / "models" / "resnet50.json").read_text())["group"] == "matrix"
    assert load_predictions(tmp_path / "predictions" / "resnet50.npz").top1.shape == (1, 200)
    assert (tmp_path / "predictions" / "resnet50.npz").stat().st_size < 2_000  # 200 images: small

    bad = write_params(tmp_path, "bad.yaml", evaluate={"batch_sise": 1})
    done = subprocess.run(
        args[:5] + [str(bad)] + args[6:], capture_output=True, text=True, cwd=tmp_path, env=stage_env()
    )
    assert done.returncode == 1 and "error: " in done.stderr and "evaluate.batch_sise" in done.stderr

    done = subprocess.run(
        args[:3] + ["densenet201"] + args[4:], capture_output=True, text=True, cwd=tmp_path, env=stage_env()
    )
    assert done.returncode == 1 and "densenet201/model.pt: no such weights file" in done.stderr
    assert not (tmp_path / "metrics" / "models" / "densenet201.json").exists()
    assert not (tmp_path / "predictions" / "densenet201.npz").exists()


def test_every_trained_model_has_its_own_evaluate_stage() -> None:
    """dvc.yaml: one evaluate stage per directory a training stage writes below models/, depending on that
    directory alone and writing that model's two small files; and `collect` keeps exactly those models."""
    import yaml

    from effnet.config import params_from_dict
    from effnet.results import in_run
    from effnet.study import study_models

    repo = pytest.importorskip("dvc.repo").Repo(str(ROOT))
    stages = list(repo.index.stages)
    trained = sorted(
        o.def_path
        for s in stages
        if not s.name.startswith("evaluate")
        for o in s.outs
        if o.def_path.startswith("models/")
    )
    evaluated = []
    for stage in (s for s in stages if s.name.startswith("evaluate")):
        (model_dir,) = [d.def_path for d in stage.deps if d.def_path.startswith(("models", "predictions", "metrics"))]
        model = model_dir.removeprefix("models/")
        assert stage.cmd.endswith(f"-m stages.evaluate --model {model}"), stage.name
        assert sorted(o.def_path for o in stage.outs) == [f"metrics/models/{model}.json", f"predictions/{model}.npz"]
        evaluated.append(model_dir)
    assert sorted(evaluated) == trained

    params = params_from_dict(yaml.safe_load((ROOT / "params.yaml").read_text()))
    run = [m.name for m in study_models(params)]
    for model_dir in evaluated:
        assert in_run({"model": model_dir.removeprefix("models/")}, run), model_dir


def test_a_read_only_metrics_directory_or_a_full_disk_leaves_both_files_as_they_were(
    tmp_path: Path, prepared_data_dir: Path, monkeypatch
) -> None:
    import errno

    import effnet.evaluate as evaluate_module
    from effnet.io import WriteError

    write_weights(
        tmp_path / "models" / "efficientnet_b0" / "model.pt", replace(TINY, name="efficientnet_b0"), ema=False
    )
    cfg = EvaluateConfig(batch_size=50, throughput_batches=1, images_per_class=1)
    metrics, predictions = tmp_path / "metrics", tmp_path / "predictions"
    for path, text in ((metrics / "efficientnet_b0.json", "old"), (predictions / "efficientnet_b0.npz", "old")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def run():
        return evaluate_one(
            trained_model(tmp_path / "models", "efficientnet_b0"),
            prepared_data_dir,
            cfg,
            metrics_dir=metrics,
            predictions_dir=predictions,
            log=lambda *_: None,
        )

    real_write_bytes, measured = Path.write_bytes, []

    def read_only(self, data):  # metrics/ read-only (as root, chmod would not stop the writes)
        if self.parent == metrics:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    monkeypatch.setattr(
        evaluate_module,
        "evaluate_model",
        lambda *a, **k: measured.append(1) or (_ for _ in ()).throw(AssertionError("evaluated")),
    )
    with pytest.raises(WriteError, match=f"{metrics} is not writable"):
        run()
    assert not measured  # refused before the evaluation, and before predictions/ was touched
    monkeypatch.undo()

    real_write_text = Path.write_text

    def full_disk(self, text, *args, **kwargs):  # the record's write fails after the predictions were written
        if self.parent == metrics:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(WriteError, match="efficientnet_b0.json: could not be written: no space left on the disk"):
        run()
    monkeypatch.undo()
    assert (metrics / "efficientnet_b0.json").read_text() == (predictions / "efficientnet_b0.npz").read_text() == "old"
    assert sorted(p.name for d in (metrics, predictions) for p in d.iterdir()) == [
        "efficientnet_b0.json",
        "efficientnet_b0.npz",
    ]
