"""B0's accuracy against CPU-minutes: the measurement the small study's resolution and epochs are chosen from.

    python scripts/small_tradeoff.py --data data/cifar100 --runs 16:6 24:3 [--out benchmarks/small_tradeoff.json]

Each run `RES:EPOCHS` trains the scaling study's B0 (`effnet.scaling.study_spec('baseline')`)
at base resolution RES for EPOCHS epochs on the full training split (45,000 images), with
the recipe of params.yaml under the overrides of `--profile` (scripts/small.yaml), one seed,
then measures top-1 on the 5,000 validation and the 10,000 test images with the raw and the
EMA weights. It records wall-clock minutes of training (this machine, its threads) beside
them. Runs are appended to `--out` as they finish, so an interrupted measurement keeps the
finished runs; a run already in the file is not repeated. The small study's profile cites
this file; nothing here chooses anything on test: the test column is reported, the choice
of resolution and epochs is made on validation accuracy per minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from effnet.config import apply_overrides, params_from_dict
from effnet.data import DeviceLoader, load_meta, load_split
from effnet.io import write_json
from effnet.report import cpu_name
from effnet.scaling import study_spec
from effnet.train import evaluate_accuracy, train


def overridden_params(params_path: Path, profile: Path, resolution: int, epochs: int):
    """params.yaml under the profile's overrides, at this run's base resolution and epochs (scaling section)."""
    raw = apply_overrides(yaml.safe_load(params_path.read_text()), yaml.safe_load(profile.read_text()) or {})
    run = {"network.base_resolution": resolution, "scaling.epochs": epochs, "scaling.train_per_class": 0}
    return params_from_dict(apply_overrides(raw, run))


def test_accuracy(model, data: Path, resolution: int, batch: int) -> tuple[float, float]:
    meta, split = load_meta(data), load_split(data, "test")
    loader = DeviceLoader(
        split.images,
        split.fine_labels,
        batch_size=batch,
        train=False,
        device=torch.device("cpu"),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        resolution=resolution,
    )
    return evaluate_accuracy(model, loader)


def run(resolution: int, epochs: int, args) -> dict:
    params = overridden_params(args.params, args.profile, resolution, epochs)
    spec, _ = study_spec("baseline", None, params, log=lambda *_: None)
    cfg = dataclasses.replace(params.train, epochs=epochs, train_per_class=0, seed=0)
    with tempfile.TemporaryDirectory() as checkpoints:
        start = time.perf_counter()
        result = train(spec, cfg, args.data, checkpoint_dir=Path(checkpoints), deadline=float("inf"))
        minutes = (time.perf_counter() - start) / 60
    test = test_accuracy(result.model, args.data, spec.resolution, cfg.eval_batch_size)
    test_ema = test_accuracy(result.ema, args.data, spec.resolution, cfg.eval_batch_size) if result.ema else test
    m = result.metrics
    return {
        "resolution": resolution,
        "epochs": epochs,
        "train_minutes": round(minutes, 2),
        "minutes_per_epoch": round(minutes / epochs, 2),
        "images_per_s": round(m["images_per_s"], 1),
        "val_top1": m["val/top1"],
        "val_top1_ema": m["val/top1_ema"],
        "test_top1": test[0],
        "test_top1_ema": test_ema[0],
        "test_top5": test[1],
        "batch_size": cfg.batch_size,
        "threads": torch.get_num_threads(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "curve_val_top1": [round(h["val/top1"], 4) for h in result.history],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/cifar100"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--profile", type=Path, default=Path("scripts/small.yaml"))
    parser.add_argument("--runs", nargs="+", default=["16:6", "24:3"], help="RESOLUTION:EPOCHS")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/small_tradeoff.json"))
    args = parser.parse_args()
    record = (
        json.loads(args.out.read_text())
        if args.out.exists()
        else {
            "what": "B0 (scaling-study spec), one seed, full training split, recipe params.yaml + " + str(args.profile),
            "device": f"CPU {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}",
            "runs": [],
        }
    )
    for text in args.runs:
        resolution, epochs = (int(part) for part in text.split(":"))
        if any(r["resolution"] == resolution and r["epochs"] == epochs for r in record["runs"]):
            print(f"{text}: already measured in {args.out}")
            continue
        entry = run(resolution, epochs, args)
        record["runs"].append(entry)
        write_json(args.out, record)
        print(json.dumps(entry), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
