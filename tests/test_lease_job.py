"""effnet/lease_job.py, `scripts/gpu.py pack-lease` and the clock's lease figures: a fake clock, fake rows, no
training (docs/lease.md)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from test_gpu_recipe import gpu  # scripts/gpu.py, loaded once for both test files

from effnet import clock as effnet_clock
from effnet import transfer
from effnet.config import load_params
from effnet.lease_job import Row, choose_epochs, final_evaluation_s, read_deadline, run_rows, time_left, wait_for

ROOT = Path(__file__).resolve().parents[1]


def _lease_job_script():
    """scripts/lease_job.py, loaded from its path (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("lease_job_script", ROOT / "scripts" / "lease_job.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    return job


class FakeClock:
    """A clock that moves only when a row 'runs'."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _rows(clock: FakeClock, seconds: list[float]) -> list[Row]:
    def measure(s: float):
        def run():
            clock.now += s
            return {"kind": "train", "model": f"m{s}", "images_per_s": 100.0}

        return run

    return [Row(f"row{i}", 5.0, measure(s)) for i, s in enumerate(seconds)]


def test_the_benchmark_stops_inside_its_limit_and_keeps_every_finished_row(tmp_path):
    clock = FakeClock()
    deadline = tmp_path / "deadline"
    deadline.write_text(f"{clock.now + 100:.0f}\n")
    out = tmp_path / "bench.json"
    record = run_rows(_rows(clock, [20, 20, 20, 20, 20, 20]), out, deadline_file=deadline, reserve_s=40, clock=clock)
    # 100 s, 40 reserved: three rows of 20 end at 60 s; the next needs 20 + 40 > the 40 left
    assert [r["name"] for r in record["rows"]] == ["row0", "row1", "row2"]
    assert record["skipped"] == ["row3", "row4", "row5"] and "before row3" in record["stopped"]
    assert clock.now <= read_deadline(deadline) - 40
    assert json.loads(out.read_text()) == record  # on disk as returned, row by row

    # the deadline moved later by a later call: read again before each row, so more rows run
    clock = FakeClock()
    deadline.write_text(f"{clock.now + 100:.0f}\n")
    rows = _rows(clock, [10, 20, 20, 20])
    moved = Row("mover", 0.0, lambda: (deadline.write_text(f"{clock.now + 1000:.0f}\n"), {})[1])
    record = run_rows([moved, *rows], out, deadline_file=deadline, reserve_s=40, clock=clock)
    assert record["stopped"] is None and len(record["rows"]) == 5


def test_rows_that_grow_are_stopped_before_one_would_overrun(tmp_path):
    clock = FakeClock()
    deadline = tmp_path / "deadline"
    deadline.write_text(f"{clock.now + 30:.0f}\n")
    # each row 3x the last: after 1 + 3 (4 s), 26 s left would hold "the longest" (3 s) but not 3 x 3 = 9 ... until
    # 1 + 3 + 9 = 13 s, 17 left, under the next row's estimate of 27
    record = run_rows(
        _rows(clock, [1, 3, 9, 27]), tmp_path / "b.json", deadline_file=deadline, reserve_s=0, clock=clock
    )
    assert [r["name"] for r in record["rows"]] == ["row0", "row1", "row2"] and clock.now <= read_deadline(deadline)


def test_a_failing_row_is_recorded_and_optional_rows_are_skipped_when_asked(tmp_path):
    clock = FakeClock()
    deadline = tmp_path / "deadline"
    deadline.write_text(f"{clock.now + 1000:.0f}\n")

    def oom():
        raise RuntimeError("CUDA out of memory\nmore")

    rows = [Row("bad", 1.0, oom), Row("compile", 1.0, lambda: {"x": 1}, optional=True), *_rows(clock, [1])]
    record = run_rows(
        rows, tmp_path / "b.json", deadline_file=deadline, reserve_s=0, clock=clock, skip_optional=lambda: True
    )
    assert record["rows"][0]["error"] == "RuntimeError: CUDA out of memory"
    assert record["skipped"] == ["compile"] and [r["name"] for r in record["rows"]] == ["bad", "row0"]


def test_a_missing_deadline_file_is_a_deadline_past(tmp_path):
    assert time_left(tmp_path / "none", clock=lambda: 5.0) == -5.0
    assert not wait_for(tmp_path / "flag", deadline_file=tmp_path / "none", reserve_s=0, sleep=lambda s: None)
    (tmp_path / "flag").write_text("{}")
    assert wait_for(tmp_path / "flag", deadline_file=tmp_path / "none", reserve_s=0)


# a two-model lease plan's figures (B0 and ResNet-50 on the full split), shared by the planning tests
PLAN_FIGURES = dict(
    train_images=45_000,
    val_images=5_000,
    val_passes=2,
    final_images=15_000,
    eval_cost=1 / 3,
    stage_start_s=20.0,
    stages=5,
    stop_s=30.0,
    max_epochs=100,
)
PLAN_RATES = {"efficientnet_b0": 9_000.0, "resnet50": 6_000.0}


def test_epochs_chosen_from_the_rates_end_before_the_deadline():
    figures, rates = PLAN_FIGURES, PLAN_RATES
    plan = choose_epochs(rates, list(rates), time_left_s=400.0, **figures)
    assert plan.fits and 1 <= plan.epochs < 100
    assert plan.expected_s <= 400.0 - 30.0  # ends before the deadline, with the stop reserve
    more = choose_epochs(rates, list(rates), time_left_s=400.0, **{**figures, "max_epochs": plan.epochs + 1})
    assert more.epochs == plan.epochs  # one epoch more would not fit
    assert plan.fixed_s + (plan.epochs + 1) * sum(plan.per_epoch_s.values()) > plan.available_s
    capped = choose_epochs(rates, list(rates), time_left_s=1e6, **figures)
    assert capped.epochs == 100
    short = choose_epochs(rates, list(rates), time_left_s=100.0, **figures)
    assert short.epochs == 1 and not short.fits  # the trainer's deadline stops it (exit 75)
    with pytest.raises(ValueError, match="no measured training rate for resnet50"):
        choose_epochs({"efficientnet_b0": 1.0}, list(rates), time_left_s=400.0, **figures)


def test_every_seed_of_each_model_is_planned_for_since_the_window_trains_them_one_after_another():
    """train.seeds = 3 (params.yaml): each model trains and is evaluated three times; a plan that counted one
    seed (found by a --lease dry run) left ResNet-50 cut in its first seed and B0 never evaluated."""
    figures, rates = PLAN_FIGURES, PLAN_RATES
    one = choose_epochs(rates, list(rates), time_left_s=600.0, **figures)
    three = choose_epochs(rates, list(rates), time_left_s=600.0, seeds=3, **figures)
    assert three.per_epoch_s == pytest.approx({m: 3 * s for m, s in one.per_epoch_s.items()})
    assert three.fixed_s - 5 * 20.0 == pytest.approx(3 * (one.fixed_s - 5 * 20.0))
    assert three.fits and three.epochs < one.epochs and three.expected_s <= 600.0 - 30.0
    with pytest.raises(ValueError, match="seeds must be at least 1"):
        choose_epochs(rates, list(rates), time_left_s=600.0, seeds=0, **figures)


def test_the_final_evaluation_is_costed_once_for_the_plan_and_the_windows_reserve():
    """choose_epochs's fixed time and scripts/lease_job.py's evaluation reserve use one formula: 3 seeds of
    15,000 images at a third of a training image each are 15,000 training images' worth per model."""
    rates = PLAN_RATES
    cost = final_evaluation_s(rates, list(rates), final_images=15_000, eval_cost=1 / 3, seeds=3)
    assert cost == pytest.approx(15_000 / 9_000 + 15_000 / 6_000)
    plan = choose_epochs(rates, list(rates), time_left_s=600.0, **PLAN_FIGURES, seeds=3)
    assert plan.fixed_s == pytest.approx(5 * 20.0 + cost)


def test_the_clock_reads_only_the_recipe_rows_without_errors_as_rates():
    bench = {
        "rows": [
            {"kind": "matmul", "tflops": 700.0},
            {"kind": "train", "model": "efficientnet_b0", "variant": "recipe", "images_per_s": 9000.0},
            {"kind": "train", "model": "efficientnet_b0", "variant": "compile", "images_per_s": 12000.0},
            {"kind": "train", "model": "resnet50", "variant": "recipe", "error": "OOM"},
        ]
    }
    assert effnet_clock.lease_rates(bench) == {"efficientnet_b0": 9000.0}


def _lease_tree(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """A machine after the job: the job's run archive, its records, and an unfinished B0 checkpoint of 40 MiB."""
    root, lease = tmp_path / "root", tmp_path / "lease"
    staging = tmp_path / "run-staging"
    (staging / "metrics" / "models").mkdir(parents=True)
    (staging / "metrics" / "models" / "resnet50.json").write_text('{"test/top1": 0.1}')
    (staging / "checkpoints" / "efficientnet_b0").mkdir(parents=True)
    (staging / "checkpoints" / "efficientnet_b0" / "last.pt").write_bytes(b"fp32")  # replaced by the bf16 copy
    (staging / "status.json").write_text(
        json.dumps({"window": "lease", "started": "2026-12-03T18:00:00Z", "outputs": ["metrics/models/resnet50.json"]})
    )
    transfer.pack(staging, lease / "out", extras=[])
    (lease / "bench.json").write_text('{"rows": []}')
    (lease / "job.log").write_text("log\n")
    (root / "checkpoints" / "efficientnet_b0").mkdir(parents=True)
    (root / "checkpoints" / "efficientnet_b0" / "last.pt").write_bytes(b"x")
    (root / "checkpoints" / "resnet50").mkdir(parents=True)  # finished: weights, no checkpoint packed
    (root / "checkpoints" / "resnet50" / "last.pt").write_bytes(b"x")
    (root / "models" / "resnet50").mkdir(parents=True)
    (root / "models" / "resnet50" / "model.pt").write_bytes(b"x")
    bf16 = os.urandom(40 * 2**20)  # incompressible, over two chunks

    def shrink(path, target):  # effnet.checkpoint.shrink_checkpoint has its own tests (test_checkpoint_bf16.py)
        Path(target).write_bytes(bf16)
        return len(bf16)

    monkeypatch.setattr("effnet.checkpoint.shrink_checkpoint", shrink)
    return root, lease


def test_pack_lease_fits_the_calls_limits_and_round_trips_with_its_md5s(tmp_path, monkeypatch):
    root, lease = _lease_tree(tmp_path, monkeypatch)
    files = gpu.pack_lease(root, lease, tmp_path / "out")
    assert len(files) <= gpu.MAX_FILES and all(p.stat().st_size <= gpu.FILE_LIMIT_BYTES for p in files)
    assert {p.name for p in files} == {"results.tar.00", "results.tar.01", "results.tar.02", "results.md5"}
    here = tmp_path / "here"
    written = gpu.unpack([tmp_path / "out"], here)
    assert "metrics/models/resnet50.json" in written and "benchmarks/bench_lease.json" in written
    assert (here / "checkpoints" / "efficientnet_b0" / "last.pt").stat().st_size == 40 * 2**20
    record = json.loads((here / "checkpoints" / "efficientnet_b0" / gpu.BF16_RECORD).read_text())
    assert record["dtype"] == "bfloat16" and "not bit-for-bit" in record["note"]
    assert not (here / "checkpoints" / "resnet50").exists()
    assert next((here / "gpu" / "lease").glob("*/lease/job.log")).read_text() == "log\n"
    assert gpu.bf16_resume_record(here, "efficientnet_b0") == record  # what the resumed run's record carries

    (tmp_path / "out" / "results.tar.01").write_bytes(b"damaged")
    with pytest.raises(transfer.TransferError, match="missing or damaged"):
        gpu.unpack([tmp_path / "out"], tmp_path / "elsewhere")


def test_pack_lease_without_a_run_archive_takes_the_jobs_outputs_from_the_tree(tmp_path, monkeypatch):
    """What the stages wrote since the job started, less the curves of a training that was cut (a mix of old and
    new files; the checkpoint that comes home holds its history)."""
    root, lease = _lease_tree(tmp_path, monkeypatch)
    for path in (lease / "out").iterdir():
        path.unlink()
    old = root / "dvclive" / "efficientnet_b0" / "old.json"  # an earlier run's, committed: stays behind
    old.parent.mkdir(parents=True)
    old.write_text("{}")
    os.utime(old, (1.0, 1.0))
    (lease / "job.json").write_text(json.dumps({"started": 100.0}))
    (root / "dvclive" / "efficientnet_b0" / "metrics.json").write_text("{}")  # B0's training was cut: no weights
    (root / "dvclive" / "resnet50").mkdir(parents=True)  # ResNet-50's finished (models/resnet50/model.pt)
    (root / "dvclive" / "resnet50" / "metrics.json").write_text("{}")
    gpu.pack_lease(root, lease, tmp_path / "out")
    here = tmp_path / "here"
    written = gpu.unpack([tmp_path / "out"], here)
    assert "dvclive/resnet50/metrics.json" in written
    assert not (here / "dvclive" / "efficientnet_b0").exists()  # neither the cut run's curves nor the old file
    status = json.loads(next((here / "gpu" / "lease").glob("*/status.json")).read_text())
    assert status["left_behind"] == ["dvclive/efficientnet_b0"]
    assert (here / "checkpoints" / "efficientnet_b0" / "last.pt").is_file()  # the cut run resumes from this


def test_the_clock_labels_measured_and_estimated_gpu_figures(tmp_path):
    params = load_params(ROOT / "params.yaml")
    lines = effnet_clock.gpu_lines(params, None, tmp_path / "none.json")
    assert len(lines) == 1 and "no GPU figure is measured" in lines[0]
    bench = {
        "device": "NVIDIA H200",
        "data": "synthetic",
        "batch_size": 256,
        "rows": [
            {"kind": "train", "model": "efficientnet_b0", "variant": "recipe", "images_per_s": 1000.0},
            {"kind": "train", "model": "resnet50", "variant": "recipe", "images_per_s": 500.0},
        ],
    }
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    lines = effnet_clock.gpu_lines(params, effnet_clock.load_lease_bench(tmp_path / "bench.json"))
    by_model = {line.split()[0]: line for line in lines[1:]}
    assert "measured rate (1,000 images/s)" in by_model["efficientnet_b0"]
    assert "measured rate (500 images/s)" in by_model["resnet50"]
    assert "estimated (no row" in by_model["efficientnet_b7"] and "estimated" in by_model["search"]
    # B0's line: its epochs of training and validation and its final evaluation at the measured rate
    b0 = next(j for j in effnet_clock.budget(params) if j.name == "efficientnet_b0")
    assert effnet_clock.duration(b0.b0_images / 1000.0) in by_model["efficientnet_b0"]
    assert effnet_clock.main(["--gpu", "--lease-bench", str(tmp_path / "bench.json")], out=lambda s: None) == 0


def test_the_jobs_second_phase_trains_both_models_for_the_epochs_that_fit_the_deadline(tmp_path, monkeypatch):
    """scripts/lease_job.py's phase 2 with gpu.py's run_window replaced by a recorder: the window it writes."""
    import time
    from types import SimpleNamespace

    import yaml

    job = _lease_job_script()
    calls = []

    def run_window(window_path, **kwargs):
        calls.append((yaml.safe_load(Path(window_path).read_text()), kwargs))
        return 0

    monkeypatch.setattr(job, "load_script", lambda path, name: SimpleNamespace(run_window=run_window))
    (tmp_path / "ready.json").write_text("{}")
    (tmp_path / "deadline").write_text(f"{int(time.time()) + 400}\n")
    args = SimpleNamespace(
        ready=tmp_path / "ready.json",
        deadline_file=tmp_path / "deadline",
        reserve_s=60.0,
        stage_start_s=20.0,
        pack_s=30.0,
        stop_s=30.0,
        lease_dir=tmp_path,
        store=tmp_path / "store",
        set=["train.train_per_class=20"],
    )
    bench = {
        "rows": [
            {"kind": "train", "model": "efficientnet_b0", "images_per_s": 20_000.0},
            {"kind": "train", "model": "resnet50", "images_per_s": 10_000.0},
        ]
    }
    record: dict = {}
    assert job.train_and_evaluate(args, bench, record) == 0
    ((window, kwargs),) = calls
    plan = record["plan"]
    assert window["models"] == ["efficientnet_b0", "resnet50"] and kwargs["prepared"] is True
    assert window["params"]["train.epochs"] == plan["epochs"] >= 1 and plan["fits"]
    assert window["params"]["train.train_per_class"] == 20 and plan["epochs"] == 90  # 2,000 images, 3 seeds each
    # training, then the evaluation the window reserves, the packing and the trainer's stop: inside the 400 s
    assert plan["training_s"] + plan["evaluate_s"] + 30 + 30 + 20 <= plan["time_left_s"]
    assert 0 < kwargs["limit_s"] <= 400


def test_the_job_loads_the_real_window_recipe_a_script_with_dataclasses():
    """Phase 2 loads scripts/gpu.py by path; unregistered in sys.modules, its dataclasses failed at import."""
    import sys

    job = _lease_job_script()
    try:
        recipe = job.load_script(ROOT / "scripts" / "gpu.py", "gpu_recipe_loaded_by_the_job")
        assert callable(recipe.run_window) and sys.modules["gpu_recipe_loaded_by_the_job"] is recipe
    finally:
        sys.modules.pop("gpu_recipe_loaded_by_the_job", None)


def test_pack_lease_brings_a_real_unfinished_checkpoint_home_in_bf16(tmp_path):
    import torch

    from effnet.checkpoint import load_checkpoint, save_checkpoint
    from effnet.config import TrainConfig
    from effnet.models import ModelSpec

    root, lease = tmp_path / "root", tmp_path / "lease"
    lease.mkdir()
    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 64)).sum().backward()
    optimizer.step()
    spec = ModelSpec(name="tiny", arch="efficientnet", resolution=16, width=0.25, depth=0.34, dropout=0.1)
    checkpoint = root / "checkpoints" / "efficientnet_b0" / "last.pt"
    checkpoint.parent.mkdir(parents=True)
    save_checkpoint(
        checkpoint,
        spec,
        TrainConfig(),
        epoch=1,
        history=[],
        train_time_s=1.0,
        objects={"model": model, "ema": None, "optimizer": optimizer, "scheduler": None, "scaler": None},
    )
    gpu.pack_lease(root, lease, tmp_path / "out")
    here = tmp_path / "here"
    gpu.unpack([tmp_path / "out"], here)
    small = load_checkpoint(here / "checkpoints" / "efficientnet_b0" / "last.pt")
    assert small["epoch"] == 1 and small["model"]["weight"].dtype == torch.bfloat16
    assert torch.equal(small["model"]["weight"], model.weight.detach().to(torch.bfloat16))
    assert gpu.bf16_resume_record(here, "efficientnet_b0")["fp32_bytes"] == checkpoint.stat().st_size
