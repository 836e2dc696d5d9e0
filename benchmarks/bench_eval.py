"""CPU inference speed of the evaluate stage: `effnet.evaluate.predict` in each layout, precision and batch size,
against the stage's own path today (fp32, NCHW, `evaluate.batch_size` 500), measured in the same run.

    python benchmarks/bench_eval.py [--models b0 compound resnet50] [--resolution 16] [--images 2000]
                                    [--batch-sizes 100 250 500] [--data data/cifar100] [--repeats 3]

Why: the small study's chains spend a large share of their time in the evaluate stage (scaling-resolution_4x:
1,504 s of 5,253 s), and its inference rate was no faster than training's at that size. `predict` is what the
stage runs for every seed, raw and EMA weights, and split: each image and its mirror, softmax. Today the
stage feeds it NCHW fp32 batches, while the trainer (and its timing, `bench_cpu.py`) uses channels_last.

For each network (as `bench_cpu.py` builds them: B0 at the small study's 16 px, the compound-scaled B0 at
`--target` x its FLOPs, and each baseline asked for; randomly initialised, its BatchNorm statistics then
recomputed on the images, since at random init the eval-mode statistics can shrink B0's logits to ~1e-14 and
every probability to 1/100; the speed does not depend on the weights), every row runs `predict` over the same
`--images` val images (real ones from `--data` when present, else random), the median of `--repeats` runs
after one warm-up, and prints:

- images/s (each image counted once; its mirror is part of the cost) and the ratio to the reference row;
- agreement with the reference: the largest |probability difference| over every image and class, and the share
  of images whose top-1 class is the same. A faster path that changes the results shows it here; fp32
  channels_last should agree to float rounding, bf16 will not, and the evaluate stage reports fp32.

Check `uptime` first: the figures mean something on a quiet machine only. A script that prints figures, not a
test (tests/test_benchmarks.py checks it on a tiny network).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from bench_cpu import spec_of

from effnet.data import DataError, DeviceLoader, load_meta
from effnet.evaluate import load_eval_data, predict
from effnet.models import ModelSpec, build_model, count_flops

REFERENCE_BATCH = 500  # params.yaml's evaluate.batch_size: the stage's path today


def eval_images(data_dir: Path, count: int) -> tuple[np.ndarray, np.ndarray, tuple, tuple, str]:
    """(uint8 images, labels, mean, std, origin): `count` val images of `data_dir` as the evaluate stage loads
    them (its seeded per-class subset, `count` / 100 a class, rounded up; then the first `count`), else random."""
    try:
        load_meta(data_dir)
    except DataError:  # no prepared data: random images (a count too large for the val split is an error below)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
        return images, rng.integers(0, 100, size=count), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "random"
    data = load_eval_data(data_dir, images_per_class=-(-count // 100))
    val = data.splits["val"]
    return val.images[:count], val.fine_labels[:count], data.mean, data.std, "real val"


def timed(
    model: torch.nn.Module, spec: ModelSpec, data, *, batch: int, channels_last: bool, bf16: bool, repeats: int
) -> tuple[float, torch.Tensor]:
    """(median seconds of one `predict` over the images, its probabilities)."""
    images, labels, mean, std, _ = data
    loader = DeviceLoader(
        images,
        labels,
        batch_size=batch,
        train=False,
        mean=mean,
        std=std,
        resolution=spec.resolution,
        channels_last=channels_last,
    )  # re-iterable: one per row
    probs = None
    times = []
    for i in range(repeats + 1):  # the first run pays for allocations and kernel selection
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            probs = predict(model, loader)[0]
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times), probs


@torch.no_grad()
def calibrate(model: torch.nn.Module, spec: ModelSpec, data) -> torch.nn.Module:
    """Recompute every BatchNorm's running statistics on the images (train-mode passes), then eval mode."""
    images, labels, mean, std, _ = data
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the passes
    model.train()
    for batch, _ in DeviceLoader(
        images, labels, batch_size=min(len(labels), 250), train=False, mean=mean, std=std, resolution=spec.resolution
    ):
        model(batch)
    return model.eval()


def bench(name: str, args, data) -> list[dict]:
    """Every row of one network: the reference first, then each variant against it."""
    spec = spec_of(name, args.resolution, args.target)
    torch.manual_seed(0)
    nchw = calibrate(build_model(spec), spec, data)
    last = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    count = len(data[1])
    what = f"{spec.name} {spec.resolution}px, {count_flops(spec) / 1e6:,.1f} M multiply-adds/image"
    print(f"{what}: {count} {data[4]} images, each with its mirror, {torch.get_num_threads()} threads", flush=True)
    variants = [(f"fp32 NCHW, batch {REFERENCE_BATCH} (the stage today)", nchw, REFERENCE_BATCH, False, False)]
    for batch in args.batch_sizes:
        if batch != REFERENCE_BATCH:
            variants.append((f"fp32 NCHW, batch {batch}", nchw, batch, False, False))
        variants.append((f"fp32 channels_last, batch {batch}", last, batch, True, False))
        variants.append((f"bf16 channels_last, batch {batch}", last, batch, True, True))
    rows, reference, ref_probs = [], None, None
    for label, model, batch, channels_last, bf16 in variants:
        seconds, probs = timed(
            model, spec, data, batch=batch, channels_last=channels_last, bf16=bf16, repeats=args.repeats
        )
        if reference is None:
            reference, ref_probs = seconds, probs
        row = {
            "network": what,
            "setup": label,
            "images_per_s": round(count / seconds, 1),
            "vs_reference": round(reference / seconds, 3),
            "max_prob_diff": float((probs - ref_probs).abs().max()),
            "same_top1": float((probs.argmax(1) == ref_probs.argmax(1)).double().mean()),
        }
        rows.append(row)
        print(
            f"    {label:42s} {row['images_per_s']:10,.1f} img/s {row['vs_reference']:7.2f}x   "
            f"max |dp| {row['max_prob_diff']:.2e}, same top-1 {100 * row['same_top1']:.2f}%",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=16, help="B0's base resolution (the small study's)")
    parser.add_argument("--target", type=float, default=4.0, help="FLOPs multiple of the compound-scaled model")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["b0", "compound", "resnet50"],
        help="b0, compound, or a baseline (resnet50, densenet201, resnet152)",
    )
    parser.add_argument("--images", type=int, default=2000, help="val images per run")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 250, 500])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (after one warm-up)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data", type=Path, default=Path("data/cifar100"), help="val images (else random)")
    parser.add_argument("--json", type=Path, help="also write every row here")
    args = parser.parse_args(argv)
    if args.images < 1 or args.repeats < 1 or min(args.batch_sizes) < 1:
        parser.error("--images, --repeats and every --batch-sizes value must be >= 1")
    torch.set_num_threads(args.threads)
    data = eval_images(args.data, args.images)
    print(f"torch {torch.__version__}, load average {os.getloadavg()[0]:.2f} at the start (CPU figures only)")
    rows = [row for name in args.models for row in bench(name, args, data)]
    if args.json:
        args.json.write_text(
            json.dumps({"torch": torch.__version__, "images": args.images, "rows": rows}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
