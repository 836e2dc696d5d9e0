"""The benchmarks: their failure paths (no CUDA for --device cuda, out of memory in the trainer benchmark),
bf16 parity, and the evaluation benchmark on a tiny network."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from effnet.models import ModelSpec

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_loader_benchmark_on_cuda_without_cuda_exits_non_zero_and_says_why():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_loader.py"), "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr and done.stdout == ""


def test_trainer_benchmark_halves_the_batch_on_out_of_memory_and_says_so(monkeypatch, capsys):
    bench = _load("bench_train")
    tried = []

    def fake(name, train, meta, args, device, *, batch_size=None, **variant):
        tried.append(batch_size)
        if batch_size > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return {"model": name, "setup": "ours", "batch": batch_size}

    monkeypatch.setattr(bench, "bench_ours", fake)
    args = argparse.Namespace(batch_size=256)
    row = bench.bench_fitting("efficientnet_b7", None, None, args, torch.device("cpu"))
    assert tried == [256, 128, 64] and row["batch"] == 64
    assert "out of memory at batch 128, halved to 64" in row["setup"]
    assert "efficientnet_b7" in capsys.readouterr().out


def test_cpu_benchmark_parity_tells_bf16_from_a_path_that_trains_differently(monkeypatch):
    """`parity` measures bf16 against fp32 beside seed-to-seed noise: real bf16 stays within it, a skewed path not."""
    bench = _load("bench_cpu")
    spec = ModelSpec(name="resnet50", arch="resnet50", resolution=8, num_classes=10)
    g = torch.Generator().manual_seed(0)
    prototypes = torch.randn(10, 3, 8, 8, generator=g)  # a learnable task: each class a noisy prototype image
    labels = [torch.randint(0, 10, (16,), generator=g) for _ in range(6)]
    data = [(prototypes[y] + 0.5 * torch.randn(16, 3, 8, 8, generator=g), y) for y in labels]
    result = bench.parity(spec, data)
    assert result["bf16_vs_fp32"] <= result["seed_vs_seed"]  # bf16 autocast stays nearer fp32 than another seed
    real = bench.losses

    def skewed(spec, data, *, bf16, seed):  # a "bf16" path whose losses are off by one nat
        return [loss + (1.0 if bf16 else 0.0) for loss in real(spec, data, bf16=False, seed=seed)]

    monkeypatch.setattr(bench, "losses", skewed)
    skew = bench.parity(spec, data)
    assert skew["bf16_vs_fp32"] == pytest.approx(1.0) and skew["bf16_vs_fp32"] > skew["seed_vs_seed"]


def test_eval_benchmark_times_the_stage_path_and_shows_which_variants_change_the_results(tmp_path, monkeypatch, capsys):
    """bench_eval: the reference row is the stage's own path; fp32 channels_last agrees with it to float rounding,
    and the agreement columns see bf16's different probabilities (no data: random images)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # bench_eval imports bench_cpu, as when run as a script
    bench = _load("bench_eval")
    out = tmp_path / "eval.json"
    assert (
        bench.main(
            [
                "--models",
                "b0",
                "--resolution",
                "8",
                "--images",
                "40",
                "--batch-sizes",
                "16",
                "--repeats",
                "1",
                "--threads",
                "1",
                "--data",
                str(tmp_path / "none"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = {row["setup"]: row for row in __import__("json").loads(out.read_text())["rows"]}
    assert list(rows) == [
        "fp32 NCHW, batch 500 (the stage today)",
        "fp32 NCHW, batch 16",
        "fp32 channels_last, batch 16",
        "bf16 channels_last, batch 16",
    ]
    reference = rows["fp32 NCHW, batch 500 (the stage today)"]
    assert reference["vs_reference"] == 1.0 and reference["max_prob_diff"] == 0.0 and reference["same_top1"] == 1.0
    assert all(row["images_per_s"] > 0 for row in rows.values())
    fp32_last, bf16 = rows["fp32 channels_last, batch 16"], rows["bf16 channels_last, batch 16"]
    assert fp32_last["max_prob_diff"] < 1e-4 < bf16["max_prob_diff"]
    assert "40 random images" in capsys.readouterr().out


def test_eval_benchmark_reads_the_val_images_the_evaluate_stage_reads(prepared_data_dir, monkeypatch):
    """bench_eval's real images are the stage's seeded per-class subset (load_eval_data), with its normalisation;
    more than the val split holds is an error naming the shortfall, not a silent switch to random images."""
    import numpy as np

    from effnet.evaluate import load_eval_data

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    bench = _load("bench_eval")
    images, labels, mean, std, origin = bench.eval_images(prepared_data_dir, 150)
    stage = load_eval_data(prepared_data_dir, images_per_class=2)  # 150 images: 2 a class, the first 150 kept
    assert origin == "real val" and len(labels) == 150 and (mean, std) == (stage.mean, stage.std)
    np.testing.assert_array_equal(images, stage.splits["val"].images[:150])
    np.testing.assert_array_equal(labels, stage.splits["val"].fine_labels[:150])
    with pytest.raises(bench.DataError, match="has only 2"):
        bench.eval_images(prepared_data_dir, 300)
