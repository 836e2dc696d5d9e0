"""CPU training speed: this trainer's step in each precision, layout and thread setting, against a plain fp32 loop.

    python benchmarks/bench_cpu.py [--resolution 16] [--target 4] [--models b0 compound resnet50 ...]
                                   [--batch-size 128] [--warmup-steps 3] [--steps 15] [--compile]
                                   [--processes-check]

For each network (B0 at the small study's base resolution, the compound-scaled B0 at
`--target` x its FLOPs, which is the largest network the scaling study trains, and each
baseline asked for), one run times, on the same module and the same batches:

- **plain**: the loop a user would write: fp32, NCHW, `SGD(nesterov)`, cross-entropy, no
  clipping, no EMA, no schedule;
- **this trainer's step** (`effnet.train.TrainState.step`: label smoothing, gradient clipping,
  EMA, per-step schedule) in fp32 NCHW, fp32 channels_last, bf16 autocast NCHW and bf16
  autocast channels_last, and optionally under `torch.compile` (inductor, `--compile`);
- **threads**: the best of these at 1 thread, and, with `--processes-check`, two processes of
  1 thread each at once (two seeds side by side), whose summed images/s is the machine's.

With `--parity STEPS`, each network also trains STEPS steps from the same initial weights in
fp32 and in bf16, and in fp32 from another seed, with dropout and stochastic depth off, on
real batches (`--data`) where present: bf16 trains like fp32 when its losses stay as near the
fp32 ones as another seed's do (`parity`, checked on a tiny network by tests/test_benchmarks.py).

Each row is the median of `--steps` timed steps after `--warmup-steps` untimed ones, over
fixed random batches already in memory (the loader is `bench_loader.py`'s business), and its
ratio to the plain loop of the same network in the same run. Check `uptime` first: the
figures mean something on a quiet machine only (load under 0.5). A script that prints
figures, not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from effnet.config import NetworkConfig, TrainConfig
from effnet.data import load_split
from effnet.io import write_json
from effnet.models import ModelSpec, baseline_spec, build_model, count_flops, published_spec
from effnet.report import cpu_name
from effnet.scaling import match_flops, target_dropout
from effnet.study import SCALING_COEFFICIENTS
from effnet.train import make_train_state


def spec_of(name: str, resolution: int, target: float) -> ModelSpec:
    net = NetworkConfig(base_resolution=resolution)
    b0 = published_spec("b0", net)
    if name == "b0":
        return b0
    if name == "compound":
        spec = match_flops("compound", target, b0, SCALING_COEFFICIENTS).spec
        return spec.__class__(**{**spec.to_dict(), "dropout": target_dropout(target)})
    return baseline_spec(name, net)


def batches(spec: ModelSpec, batch: int, count: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(batch, 3, spec.resolution, spec.resolution, generator=g),
            torch.randint(0, spec.num_classes, (batch,), generator=g),
        )
        for _ in range(count)
    ]


def real_batches(data_dir, spec: ModelSpec, batch: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """`count` batches of real training images at the network's resolution, normalised roughly; None without data."""
    try:
        split = load_split(data_dir, "train")
    except (FileNotFoundError, OSError):
        return None
    images = torch.from_numpy(split.images[: batch * count]).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.25)
    images = torch.nn.functional.interpolate(images, size=spec.resolution, mode="bilinear", antialias=True)
    labels = torch.from_numpy(split.fine_labels[: batch * count]).long()
    return list(zip(images.split(batch), labels.split(batch), strict=True))


def losses(spec: ModelSpec, data, *, bf16: bool, seed: int) -> list[float]:
    """Training losses of this trainer's step over `data`, from `seed`'s weights, no dropout or drop-path."""
    spec = dataclasses.replace(spec, dropout=0.0, drop_path_rate=0.0)
    cfg = TrainConfig(batch_size=len(data[0][1]), seed=seed, warmup_epochs=0.0)
    state = make_train_state(
        spec,
        cfg,
        device=torch.device("cpu"),
        total_steps=10 * len(data),
        warmup_steps=0,
        amp_dtype=torch.bfloat16 if bf16 else None,
    )
    state.model.train()
    return [float(state.step(images, labels, i)[0]) for i, (images, labels) in enumerate(data)]


def parity(spec: ModelSpec, data) -> dict[str, float]:
    """Mean |loss difference| per step of bf16 against fp32 (same seed) and of another fp32 seed against fp32."""
    fp32, bf16, other = (losses(spec, data, bf16=b, seed=s) for b, s in ((False, 0), (True, 0), (False, 1)))
    mean = lambda a, b: statistics.fmean(abs(x - y) for x, y in zip(a, b, strict=True))  # noqa: E731
    return {
        "bf16_vs_fp32": mean(bf16, fp32),
        "seed_vs_seed": mean(other, fp32),
        "fp32_last": fp32[-1],
        "bf16_last": bf16[-1],
    }


def median_step_s(step, data, warmup: int, steps: int) -> float:
    times = []
    for i in range(warmup + steps):
        images, labels = data[i % len(data)]
        start = time.perf_counter()
        float(step(images, labels))  # the step's loss read back: the step is over
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def plain(spec: ModelSpec, data, args) -> float:
    torch.manual_seed(0)
    model = build_model(spec).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss()

    def step(images, labels):
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return median_step_s(step, data, args.warmup_steps, args.steps)


def ours(spec: ModelSpec, data, args, *, bf16: bool, channels_last: bool, compile: bool = False) -> float:
    cfg = TrainConfig(batch_size=args.batch_size, channels_last=channels_last, compile=compile)
    state = make_train_state(
        spec,
        cfg,
        device=torch.device("cpu"),
        total_steps=10**6,
        warmup_steps=0,
        amp_dtype=torch.bfloat16 if bf16 else None,
    )
    state.model.train()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    data = [(images.contiguous(memory_format=layout), labels) for images, labels in data]
    counter = iter(range(10**9))
    return median_step_s(lambda x, y: state.step(x, y, next(counter))[0], data, args.warmup_steps, args.steps)


VARIANTS = {  # label: keyword arguments of `ours`
    "ours fp32 NCHW": dict(bf16=False, channels_last=False),
    "ours fp32 channels_last": dict(bf16=False, channels_last=True),
    "ours bf16 NCHW": dict(bf16=True, channels_last=False),
    "ours bf16 channels_last": dict(bf16=True, channels_last=True),
}


ROWS: list[dict] = []  # every row printed, for --json
PARITY: dict[str, dict] = {}
CURRENT: dict[str, str] = {}


def row(name: str, label: str, seconds: float, batch: int, reference: float | None) -> None:
    ratio = f"{reference / seconds:7.2f}x" if reference else "   1.00x"
    ROWS.append(
        {
            "network": CURRENT.get("network"),
            "setup": label,
            "ms_per_step": round(1000 * seconds, 1),
            "images_per_s": round(batch / seconds, 1),
            "vs_plain": round(reference / seconds, 3) if reference else 1.0,
        }
    )
    print(f"{name:4s} {label:58s} {1000 * seconds:9.1f} {batch / seconds:10,.1f} {ratio}", flush=True)


def bench(name: str, args) -> None:
    spec = spec_of(name, args.resolution, args.target)
    data = batches(spec, args.batch_size)
    what = f"{spec.name} {spec.resolution}px, {count_flops(spec) / 1e6:,.1f} M multiply-adds/image"
    CURRENT["network"] = what
    torch.set_num_threads(args.threads)
    reference = plain(spec, data, args)
    print(what)
    row("", f"plain fp32 NCHW loop, {args.threads} threads", reference, args.batch_size, None)
    best, best_label = None, None
    for label, variant in VARIANTS.items():
        seconds = ours(spec, data, args, **variant)
        row("", f"{label}, {args.threads} threads", seconds, args.batch_size, reference)
        if best is None or seconds < best:
            best, best_label = seconds, label
    variant = VARIANTS[best_label]
    if args.compile:
        try:
            seconds = ours(spec, data, args, **variant, compile=True)
            row("", f"{best_label} + torch.compile, {args.threads} threads", seconds, args.batch_size, reference)
        except Exception as error:  # a failed compile is a row of the table, not the end of the benchmark
            print(f"{'':4s} torch.compile failed: {type(error).__name__}: {str(error).splitlines()[0][:80]}")
    torch.set_num_threads(1)
    one = ours(spec, data, args, **variant)
    row("", f"{best_label}, 1 thread", one, args.batch_size, reference)
    torch.set_num_threads(args.threads)
    if args.parity:
        data = real_batches(args.data, spec, args.batch_size, args.parity)
        origin = "real" if data else "random"
        data = data or batches(spec, args.batch_size, args.parity)
        p = parity(spec, data)
        verdict = "trains like fp32" if p["bf16_vs_fp32"] <= p["seed_vs_seed"] else "DIFFERS from fp32"
        PARITY[what] = {"steps": args.parity, "batches": origin, **p}
        print(
            f"{'':4s} parity over {args.parity} steps on {origin} batches: mean |loss bf16 - fp32| "
            f"{p['bf16_vs_fp32']:.4f}, another seed {p['seed_vs_seed']:.4f}; last loss fp32 {p['fp32_last']:.3f}, "
            f"bf16 {p['bf16_last']:.3f}: {verdict}",
            flush=True,
        )
    if args.processes_check:
        pair = two_processes(name, best_label, args)
        row("", f"{best_label}, 2 processes x 1 thread (sum)", args.batch_size / pair, args.batch_size, reference)


def two_processes(name: str, label: str, args) -> float:
    """Images/s summed over two 1-thread processes timing `label` at once (returns the batch / that rate)."""
    command = [
        sys.executable,
        __file__,
        "--child",
        label,
        "--models",
        name,
        "--resolution",
        str(args.resolution),
        "--target",
        str(args.target),
        "--batch-size",
        str(args.batch_size),
        "--warmup-steps",
        str(args.warmup_steps),
        "--steps",
        str(args.steps),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    rates = [args.batch_size / float(child.communicate()[0].split()[-1]) for child in children]
    return args.batch_size / sum(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=16, help="B0's base resolution (the small study's)")
    parser.add_argument("--target", type=float, default=4.0, help="FLOPs multiple of the compound-scaled model")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["b0", "compound", "resnet50"],
        help="b0, compound, resnet50, densenet201, resnet152",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (inductor; minutes to compile)")
    parser.add_argument("--processes-check", action="store_true", help="also time 2 processes x 1 thread at once")
    parser.add_argument("--parity", type=int, metavar="STEPS", help="also check that bf16 trains like fp32")
    parser.add_argument("--data", type=Path, default=Path("data/cifar100"), help="real batches for --parity")
    parser.add_argument("--json", type=Path, help="also write every row here (benchmarks/bench_cpu.json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one variant's median step, for two_processes
    args = parser.parse_args()
    if args.child:
        spec = spec_of(args.models[0], args.resolution, args.target)
        torch.set_num_threads(1)
        print(ours(spec, batches(spec, args.batch_size), args, **VARIANTS[args.child]))
        return 0
    load = os.getloadavg()[0]
    print("command: " + " ".join([os.path.basename(sys.executable), *sys.argv]))
    print(
        f"torch {torch.__version__}, CPU {cpu_name()} ({os.cpu_count()} cores); load average {load:.2f} at the start"
        + ("  (NOT QUIET: figures unreliable)" if load > 0.5 else "")
    )
    print(
        f"batch {args.batch_size}, median of {args.steps} steps after {args.warmup_steps} warm-up; ratio = plain "
        "loop's seconds per step / this row's (higher is faster)"
    )
    print(f"{'':4s} {'set-up':58s} {'ms/step':>9s} {'images/s':>10s} {'vs plain':>8s}")
    for name in args.models:
        bench(name, args)
    if args.json:
        write_json(
            args.json,
            {
                "command": "python benchmarks/bench_cpu.py " + " ".join(sys.argv[1:]),
                "torch": torch.__version__,
                "cpu": f"{cpu_name()} ({os.cpu_count()} cores)",
                "load_average_at_start": round(load, 2),
                "batch_size": args.batch_size,
                "steps": args.steps,
                "warmup_steps": args.warmup_steps,
                "rows": ROWS,
                "parity": PARITY,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
