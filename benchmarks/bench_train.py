"""Training images/s: this trainer's step on the device-resident loader against the usual torchvision set-up.

    python benchmarks/bench_train.py [--device cpu|cuda] [--data data/cifar100] [--batch-size N]
                                     [--warmup-steps N] [--steps N] [--workers N] [--peak-tflops T]
                                     [--sweep] [--compile] [--cpu-bf16]

Two set-ups train EfficientNet-B0 and ResNet-50 on CIFAR-100 at the same batch size, for the
same number of timed optimiser steps after the same number of untimed warm-up steps, in the
same run:

- ours: `effnet.train.TrainState.step` (the full recipe of `TrainConfig`'s defaults: SGD
  with Nesterov momentum, per-step cosine schedule, label smoothing, gradient clipping, EMA
  of the weights) on `effnet.data.DeviceLoader` (uint8 on the device, augmentation there),
  channels_last, bf16 autocast on CUDA (the CPU trains in fp32 unless `--cpu-bf16`), and the
  CIFAR networks of `effnet.models` (`network.regime: cifar`, 8x downsampling);
- reference: `torchvision.models.efficientnet_b0(num_classes=100)` / `resnet50(num_classes=100)`
  (ImageNet stems: 32x downsampling, so a 32x32 image leaves a 1x1 map and costs far fewer
  FLOPs), fed by torchvision's CIFAR100 `__getitem__` (a PIL image per sample; RandomCrop
  with 4-pixel padding, RandomHorizontalFlip, ToTensor, Normalize) in a `DataLoader` with
  worker processes, fp32, NCHW, plain SGD and cross-entropy;
- the same usual loop on our CIFAR network, which isolates the loader, layout and precision
  from the architecture.

torchvision's and our networks differ in cost, so each row also gives multiply-adds per image (forward,
`effnet.models.count_flops`) and achieved training FLOP/s = 3 (forward + backward) x 2 (FLOPs
per multiply-add) x multiply-adds x images/s, with its share of `--peak-tflops` when given
(989 for an H100's dense bf16). On CUDA (or with `--sweep`) it then times this trainer on
B0-B7 at their resolutions and the three baselines, with peak memory. Real data when `--data`
exists, else a synthetic CIFAR-100 (said so). A script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from effnet.config import TrainConfig
from effnet.data import DeviceLoader, load_meta, load_split, prepare
from effnet.download import read_cifar100
from effnet.models import build_model, count_flops, spec_for_name
from effnet.report import cpu_name
from effnet.study import model_names
from effnet.synthetic import write_synthetic_archive
from effnet.train import (
    autocast_dtype,
    make_scheduler,
    make_train_state,
    parameter_groups,
    scaled_lr,
)


class ArrayCIFAR100(Dataset):
    """torchvision's `CIFAR100.__getitem__` over arrays already in memory (no archive needed)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: transforms.Compose) -> None:
        self.data, self.targets, self.transform = images, labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, target = self.data[index], self.targets[index]
        return self.transform(Image.fromarray(img)), target


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def endless(loader: DeviceLoader | DataLoader):
    """Batches forever, a new epoch whenever one runs out."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def timed(step, batches, warmup: int, steps: int, device: torch.device) -> tuple[float, float | None]:
    """(seconds for `steps` steps after `warmup` untimed ones, peak GiB on CUDA)."""
    for _ in range(warmup):
        step(*next(batches))
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(*next(batches))
    float(loss)  # the one host synchronisation, also on the CPU
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return seconds, peak


def bench_ours(
    name: str,
    train,
    meta,
    args,
    device: torch.device,
    *,
    batch_size: int | None = None,
    channels_last: bool = True,
    compile_mode: str | None = None,
    fused: bool = False,
) -> dict:
    """This trainer's step on `name`; the keyword arguments are the variants of the what-helped table."""
    batch_size = batch_size or args.batch_size
    spec = spec_for_name(name)  # published B0-B7 table, CIFAR regime
    cfg = TrainConfig(batch_size=batch_size, compile=args.compile and compile_mode is None, channels_last=channels_last)
    amp = autocast_dtype(cfg.precision, device, cpu_bf16=args.cpu_bf16)
    total = args.warmup_steps + args.steps + 1
    state = make_train_state(spec, cfg, device=device, total_steps=total, warmup_steps=0, amp_dtype=amp)
    if fused:  # the same SGD, one fused kernel for all parameters
        state.optimizer = torch.optim.SGD(
            parameter_groups(state.model, cfg.weight_decay),
            lr=scaled_lr(cfg),
            momentum=cfg.momentum,
            nesterov=True,
            fused=True,
        )
        state.scheduler = make_scheduler(state.optimizer, total, 0)
    if compile_mode is not None:  # "reduce-overhead" replays CUDA graphs of the compiled forward and backward
        state.forward = torch.compile(state.forward, mode=compile_mode)
    state.model.train()
    loader = DeviceLoader(
        train.images,
        train.fine_labels,
        batch_size=batch_size,
        train=True,
        device=device,
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        resolution=spec.resolution,
        crop_padding=cfg.crop_padding,
        hflip=cfg.hflip,
        channels_last=cfg.channels_last,
    )
    counter = iter(range(10**9))

    def step(images, labels):
        return state.step(images, labels, next(counter))[0]

    seconds, peak = timed(step, endless(loader), args.warmup_steps, args.steps, device)
    macs = count_flops(build_model(spec), spec.resolution)
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[amp]
    layout = "channels_last" if channels_last else "NCHW"
    return {
        "model": name,
        "setup": f"ours: DeviceLoader, {layout}, {precision}",
        "resolution": spec.resolution,
        "seconds": seconds,
        "peak": peak,
        "macs": macs,
        "batch": batch_size,
    }


def bench_fitting(name: str, train, meta, args, device: torch.device, **variant) -> dict:
    """`bench_ours`, halving the batch on CUDA out-of-memory until it fits (and saying so in the row)."""
    batch = variant.pop("batch_size", None) or args.batch_size
    note = ""
    while True:
        try:
            row = bench_ours(name, train, meta, args, device, batch_size=batch, **variant)
            row["setup"] += note
            return row
        except torch.cuda.OutOfMemoryError:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch <= 1:
                raise
            note = f"; out of memory at batch {batch}, halved to {batch // 2}"
            print(f"{name:16s} out of memory at batch {batch}: halving to {batch // 2}", flush=True)
            batch //= 2


# The what-helped table: each variant changes one thing against the recipe's own settings.
VARIANTS = {
    "recipe: channels_last, train.precision, foreach SGD": {},
    "NCHW instead of channels_last": {"channels_last": False},
    "fused SGD": {"fused": True},
    "torch.compile": {"compile_mode": "default"},
    "torch.compile + CUDA graphs (reduce-overhead)": {"compile_mode": "reduce-overhead"},
    "batch x2 (lr scaled)": {"batch_scale": 2},
    "batch x4 (lr scaled)": {"batch_scale": 4},
}


def what_helped(models: list[str], train, meta, args, device: torch.device) -> None:
    """Images/s of each variant against the recipe, per model; a variant 'helps' above 1.05x."""
    print(f"\nwhat helps (images/s against the recipe's row; batch {args.batch_size}, {args.steps} timed steps):")
    print(f"{'model':16s} {'variant':48s} {'images/s':>10s} {'x recipe':>8s} {'mem GiB':>7s}  verdict")
    for name in models:
        base = None
        for label, variant in VARIANTS.items():
            variant = dict(variant)
            scale = variant.pop("batch_scale", 1)
            try:
                row = bench_fitting(name, train, meta, args, device, batch_size=args.batch_size * scale, **variant)
            except Exception as error:  # a variant that fails is a row of the table, not the end of the benchmark
                print(
                    f"{name:16s} {label:48s} {'failed':>10s} {'':8s} {'':7s}  {type(error).__name__}: "
                    f"{str(error).splitlines()[0][:80] if str(error) else ''}"
                )
                continue
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            rate = args.steps * row["batch"] / row["seconds"]
            base = base or rate
            ratio = rate / base
            peak = f"{row['peak']:7.2f}" if row["peak"] is not None else "    n/a"
            verdict = "baseline" if not variant and scale == 1 else ("helps" if ratio > 1.05 else "no gain")
            halved = row["setup"].split("bf16")[-1] if "halved" in row["setup"] else ""
            print(f"{name:16s} {label:48s} {rate:10,.1f} {ratio:8.2f} {peak}  {verdict}{halved}", flush=True)


def matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 10) -> float | None:
    """bf16 TFLOP/s of an n-cube matrix product on `device` (random data, 3 warm-ups): the attainable peak.

    None off CUDA.
    """
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    seconds = time.perf_counter() - start
    del a, b
    torch.cuda.empty_cache()
    return 2 * n**3 * repeats / seconds / 1e12


def bench_reference(name: str, train, meta, args, device: torch.device, *, cifar_network: bool = False) -> dict:
    """The usual loop; `cifar_network` swaps torchvision's ImageNet network for ours (same FLOPs as ours)."""

    def network() -> nn.Module:
        return build_model(spec_for_name(name)) if cifar_network else getattr(torchvision.models, name)(num_classes=100)

    torch.manual_seed(0)
    model = network().to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss()
    dataset = ArrayCIFAR100(
        train.images,
        train.fine_labels,
        transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(tuple(meta["mean"]), tuple(meta["std"])),
            ]
        ),
    )
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )

    def step(images, labels):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    seconds, peak = timed(step, endless(loader), args.warmup_steps, args.steps, device)
    macs = count_flops(network(), 32)
    what = f"our CIFAR {name}" if cifar_network else f"torchvision {name}"
    return {
        "model": name,
        "setup": f"{what} + PIL DataLoader ({args.workers} workers), fp32, NCHW",
        "resolution": 32,
        "seconds": seconds,
        "peak": peak,
        "macs": macs,
    }


def report(row: dict, args) -> float:
    batch = row.get("batch", args.batch_size)
    rate = args.steps * batch / row["seconds"]
    tflops = 6 * row["macs"] * rate / 1e12
    share = f"{100 * tflops / args.peak_tflops:6.2f}%" if args.peak_tflops else "    n/a"
    measured = f"{100 * tflops / args.matmul_tflops:6.2f}%" if args.matmul_tflops else "    n/a"
    peak = f"{row['peak']:7.2f}" if row["peak"] is not None else "    n/a"
    ms_per_step = 1000 * row["seconds"] / args.steps
    print(
        f"{row['model']:16s} {row['resolution']:4d} {batch:5d} {rate:10,.1f} {ms_per_step:9.1f} "
        f"{row['macs'] / 1e9:9.3f} {tflops:8.3f} {share} {measured} {peak}  {row['setup']}",
        flush=True,
    )
    return rate


HEADER = (
    f"{'model':16s} {'res':>4s} {'batch':>5s} {'images/s':>10s} {'ms/step':>9s} {'GMACs/img':>9s} "
    f"{'TFLOP/s':>8s} {'of peak':>7s} {'of mm':>7s} {'mem GiB':>7s}  set-up"
)


def fast_cuda() -> None:
    """cuDNN autotuning and TF32 matmuls and convolutions: how the benchmark (and the lease job) run on a GPU."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", type=Path, default=Path("data/cifar100"), help="prepared arrays (download stage)")
    parser.add_argument("--batch-size", type=int, help="default: 256 on CUDA, 64 on the CPU")
    parser.add_argument("--warmup-steps", type=int, help="untimed steps first (default: 20 on CUDA, 2 on the CPU)")
    parser.add_argument("--steps", type=int, help="timed steps (default: 50 on CUDA, 5 on the CPU)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="reference DataLoader workers")
    parser.add_argument(
        "--peak-tflops", type=float, help="the device's peak, for the share column (H100 dense bf16: 989)"
    )
    parser.add_argument("--sweep", action="store_true", help="also time B0-B7 and the baselines (default on CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile our model (train.compile)")
    parser.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on the CPU too")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also the what-helped table (default on CUDA): layout, fused SGD, compile, CUDA graphs, batch",
    )
    parser.add_argument("--variant-models", nargs="+", default=["efficientnet_b0", "resnet50", "densenet201"])
    parser.add_argument("--synthetic-per-class", type=int, default=100, help="training images per class without --data")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 1
    args.batch_size = args.batch_size or (256 if cuda else 64)
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else (20 if cuda else 2)
    args.steps = args.steps or (50 if cuda else 5)
    device = torch.device(args.device)
    if cuda:
        fast_cuda()

    scratch = Path(tempfile.mkdtemp(prefix="bench_train-"))
    try:
        if (args.data / "train.npz").is_file():
            data, origin = args.data, str(args.data)
        else:
            archive = scratch / "cifar-100-python.tar.gz"
            md5 = write_synthetic_archive(archive, train_per_class=args.synthetic_per_class, test_per_class=1)
            data = scratch / "cifar100"
            prepare(
                read_cifar100(archive),
                data,
                val_per_class=max(1, args.synthetic_per_class // 10),
                seed=0,
                source_md5=md5,
            )
            origin = f"SYNTHETIC CIFAR-100-format data ({args.data} missing)"
        train, meta = load_split(data, "train"), load_meta(data)

        print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
        gpu = f", GPU {torch.cuda.get_device_name(device)}" if cuda else ""
        print(
            f"torch {torch.__version__}, torchvision {torchvision.__version__}, CPU {cpu_name()} "
            f"({os.cpu_count()} cores, {torch.get_num_threads()} torch threads){gpu}"
        )
        print(
            f"data: {origin}, {len(train):,} training images; batch {args.batch_size}, "
            f"{args.warmup_steps} warm-up + {args.steps} timed steps per row"
        )
        args.matmul_tflops = matmul_tflops(device)
        matmul = f"{args.matmul_tflops:.0f} TFLOP/s" if args.matmul_tflops else "n/a (CUDA only)"
        print(
            f"peak: datasheet {args.peak_tflops or 'n/a'} TFLOP/s dense bf16 ('of peak'); an 8192-cube bf16 matmul "
            f"timed now: {matmul} ('of mm')"
        )
        print("training FLOP/s = 6 x multiply-adds per image x images/s")
        print(HEADER)
        for ours_name, reference_name in (("efficientnet_b0", "efficientnet_b0"), ("resnet50", "resnet50")):
            ours = report(bench_fitting(ours_name, train, meta, args, device), args)
            reference = report(bench_reference(reference_name, train, meta, args, device), args)
            same = report(bench_reference(reference_name, train, meta, args, device, cifar_network=True), args)
            print(
                f"{'':16s} ours / torchvision's: {ours / reference:.2f}x images/s; "
                f"ours / usual loop on our network: {ours / same:.2f}x images/s"
            )
        if args.sweep or cuda:
            print("\nthis trainer on every network of the train matrix (published B0-B7 table, CIFAR regime):")
            print(HEADER)
            for name in model_names():
                try:
                    report(bench_fitting(name, train, meta, args, device), args)
                except torch.cuda.OutOfMemoryError:
                    print(f"{name:16s} out of memory even at batch 1")
                if cuda:
                    torch.cuda.empty_cache()
        if args.variants or cuda:
            what_helped(args.variant_models, train, meta, args, device)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
