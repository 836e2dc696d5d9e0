"""A clock before work starts: what the run in params.yaml will cost on this device.

    python -m effnet.clock [--params params.yaml] [--overrides scripts/small.yaml] [--steps 3] [--stages STAGE ...]
    python -m effnet.clock --gpu [--lease-bench benchmarks/bench_lease.json]   # a lease's measured GPU rates

The estimate multiplies two things:

- **The budget**, from params.yaml: every network the pipeline trains (the search's
  candidates, the matrix B0-B7 and the three baselines, the phi model, the scaling study), its
  epochs and images, and the validation passes after each epoch (twice with an EMA), plus the
  final evaluation on the validation and test splits.
- **The cost of one training image of each network, relative to B0** at the same base
  resolution: its FLOPs ratio (`RELATIVE_COST`) raised to an exponent measured on the device
  from B0 and B3 (`measure_cost_exponent`; time does not follow FLOPs where per-layer
  overheads dominate, as for small images on a CPU), times **B0's seconds per training image on this device**,
  timed here from a few steps of this trainer's own step (`time_b0`, `time_model`: channels_last and the
  precision the stages use). The relative costs are FLOPs ratios: for B1-B7 the paper's Table 2 (0.39 ... 37 B
  FLOPs; the searched coefficients are not known before the search), for the phi model 2^phi (the compound
  rule's FLOPs doubling), for a search candidate or a scaling-study model its FLOPs target. The baselines are
  timed as B0 is (`measure_baseline_costs`): per FLOP their time differs from an EfficientNet's by device and
  precision (depthwise convolutions are slow per FLOP; on this project's CPU the baselines train in bf16).
  Without a timing (`budget`'s default) they cost `RELATIVE_COST`, from the committed fp32 CPU run.

Evaluation is counted as a third of a training image (forward only), and each DVC stage
costs a fixed `STAGE_START_S` besides (imports, loading, CAM, the report), which dominates
the smoke run. Each chain of the small study records the clock's estimate beside the time it took
(`scripts/chain.sh`, docs/small.md): that is the check of the clock on this machine. Elsewhere the
estimate is an order of magnitude, stated as such: on a GPU the timed batch is smaller than the
real one, so it errs long.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from effnet import study
from effnet.config import ConfigError, Params, load_params

# FLOPs per image relative to B0 at the same base resolution (see the module docstring).
PAPER_FLOPS_B = {m.variant: float(m.paper.flops.removesuffix("B")) for m in study.EFFICIENTNETS}  # Table 2, study.yaml
BASELINE_FLOPS = {"resnet50": 10.65, "densenet201": 11.26, "resnet152": 30.50}  # committed run: flops / B0's flops
BASELINE_SPEED = {"resnet50": 0.30, "densenet201": 0.35, "resnet152": 0.23}  # seconds per FLOP vs EfficientNet
RELATIVE_COST = {
    **{f"efficientnet_{v}": flops / PAPER_FLOPS_B["b0"] for v, flops in PAPER_FLOPS_B.items()},
    **{name: BASELINE_FLOPS[name] * BASELINE_SPEED[name] for name in BASELINE_FLOPS},
}
EVAL_COST = 1 / 3  # an evaluated image against a trained one (forward only, against forward and backward)
# Seconds each DVC stage costs beyond its images (torchrun, imports, loading the arrays, building
# and evaluating the networks, CAM): the smoke run, whose image work is about a minute, took
# 14 min 48 s on quiet cores over its 24 stages (issue 19), about 35 s a stage.
STAGE_START_S = 35.0
OTHER_STAGES = ("download", "plan", "evaluate", "cam", "plots", "report")
TRAIN_IMAGES_PER_CLASS = 500  # CIFAR-100's training split, before the validation images are carved out
CLASSES = 100
TEST_IMAGES = 10_000
DAY = 86_400.0
SMOKE = "bash scripts/smoke.sh"
CPU_BUDGET = "bash scripts/small.sh"


@dataclasses.dataclass(frozen=True)
class Job:
    """One network the pipeline trains: its stage, relative cost per image, epochs and images."""

    name: str
    stage: str  # search, train, train_baseline, train_phi, scale
    cost: float  # seconds per training image relative to B0
    epochs: int
    train_images: int
    val_images: int  # per validation pass
    val_passes: int  # per epoch: 2 with an EMA (raw and EMA weights), else 1
    test_images: int  # the evaluate stage's final pass (validation and test)

    @property
    def b0_images(self) -> float:
        """Work in B0 training images: epochs of training and validation, then the final evaluation."""
        per_epoch = self.train_images + EVAL_COST * self.val_images * self.val_passes
        return self.cost * (self.epochs * per_epoch + EVAL_COST * self.test_images)


def _train_images(per_class: int, val_per_class: int) -> int:
    return CLASSES * (per_class if per_class > 0 else TRAIN_IMAGES_PER_CLASS - val_per_class)


def search_candidates(params: Params) -> int:
    """How many candidates the search trains (the search's own grid, so the two cannot disagree)."""
    from effnet.search import grid_candidates

    return len(grid_candidates(params.search))


def scaled_cost(flops_ratio: float, exponent: float) -> float:
    """Seconds per image relative to B0 of a network with `flops_ratio` x B0's FLOPs: flops_ratio ** exponent.

    `exponent` is measured on the device (`measure_cost_exponent`): 1 where time follows FLOPs
    (a busy GPU), well below 1 where per-layer overheads dominate (small images on a CPU).
    """
    return flops_ratio**exponent


def budget(params: Params, exponent: float = 1.0, baseline_costs: dict[str, float] | None = None) -> list[Job]:
    """Every network that `dvc repro` trains with these params, in the order of the pipeline.

    Each EfficientNet's cost is its FLOPs ratio to B0 raised to `exponent` (`scaled_cost`), a
    baseline's its timed cost relative to B0 (`measure_baseline_costs`; without a timing,
    `RELATIVE_COST`), each times its number of seeds.
    """
    data, train, scaling, evaluate = params.data, params.train, params.scaling, params.evaluate
    val = CLASSES * data.val_per_class
    passes = 2 if train.ema_decay > 0 else 1
    final = (CLASSES * evaluate.images_per_class * 2) if evaluate.images_per_class else val + TEST_IMAGES

    def job(name: str, stage: str, flops_ratio: float, epochs: int, per_class: int, cost: float | None = None) -> Job:
        # every model trains train.seeds networks (the scaling study scaling.seeds), a search candidate search.seeds
        # (identical networks, trained
        # once, are not known before the placing: an upper bound); seeds multiply the time, FLOPs scale it
        seeds = {"search": params.search.seeds, "scale": scaling.seeds}.get(stage, train.seeds)
        cost = scaled_cost(flops_ratio, exponent) if cost is None else cost
        return Job(
            name,
            stage,
            cost * seeds,
            epochs,
            _train_images(per_class, data.val_per_class),
            val,
            passes,
            final if stage != "search" else 0,
        )

    jobs = [
        job(
            f"candidate {i}/{n}",
            "search",
            params.search.flops_target,
            params.search.epochs,
            params.search.train_per_class,
        )
        for n in [search_candidates(params)]
        for i in range(1, n + 1)
    ]
    # a baseline is timed (baseline_costs) or, without a timing, costs RELATIVE_COST (the mean of those for one
    # added to study.yaml since)
    costs = baseline_costs or {}
    unmeasured = sum(RELATIVE_COST[name] for name in BASELINE_FLOPS) / len(BASELINE_FLOPS)
    jobs += [
        job(
            m.name,
            "train_baseline",
            0.0,
            train.epochs,
            train.train_per_class,
            costs.get(m.name, RELATIVE_COST.get(m.name, unmeasured)),
        )
        if m.is_baseline
        else job(m.name, "train", RELATIVE_COST[m.name], train.epochs, train.train_per_class)
        for m in study.matrix()
    ]
    jobs.append(
        job(
            f"efficientnet_phi{params.model.phi:g}",
            "train_phi",
            2.0**params.model.phi,
            train.epochs,
            train.train_per_class,
        )
    )
    jobs.append(job("scaling/baseline", "scale", 1.0, scaling.epochs, scaling.train_per_class))
    jobs += [
        job(f"scaling/{strategy}_{target:g}x", "scale", float(target), scaling.epochs, scaling.train_per_class)
        for target in scaling.flops_targets
        for strategy in study.strategy_names()
    ]
    return jobs


def dvc_stage(job: Job) -> str:
    """The dvc.yaml stage that trains `job`: 'train@efficientnet_b0', 'scale_b0', 'scale@depth-3', 'search', ..."""
    if job.stage in ("search", "train_phi"):
        return job.stage
    if job.stage in ("train", "train_baseline"):
        return f"{job.stage}@{job.name}"
    if job.name == "scaling/baseline":
        return "scale_b0"
    strategy, target = job.name.removeprefix("scaling/").rsplit("_", 1)
    return f"{'scale_compound' if strategy == 'compound' else 'scale'}@{strategy}-{target.removesuffix('x')}"


def stages_estimate(
    params: Params,
    stages: list[str],
    seconds_per_b0_image: float,
    exponent: float = 1.0,
    baseline_costs: dict[str, float] | None = None,
) -> float:
    """Seconds the training stages `stages` (dvc.yaml names, as `dvc_stage` gives them) take here, with their
    final evaluation and `STAGE_START_S` for each stage and for its evaluate stage: one chain's estimate."""
    jobs = [j for j in budget(params, exponent, baseline_costs) if dvc_stage(j) in stages]
    unknown = sorted(set(stages) - {dvc_stage(j) for j in jobs})
    if unknown:
        raise ValueError(f"no training stage {', '.join(unknown)} in this budget (dvc stage list names them)")
    return sum(j.b0_images for j in jobs) * seconds_per_b0_image + 2 * STAGE_START_S * len(stages)


def chain_lines(
    params: Params,
    device: str,
    seconds_per_b0_image: float,
    exponent: float = 1.0,
    baseline_costs: dict[str, float] | None = None,
) -> list[str]:
    """One line per chain of the small study (`study.small_study_chains`) with its estimate here, then the total
    with the closing stages (collect, cam, plots, report: `STAGE_START_S` each)."""
    lines = [
        f"clock: device {device}; B0 at {params.network.base_resolution} px trains at "
        f"{1 / seconds_per_b0_image:,.1f} images/s here (timed just now{_busy()}); "
        f"time grows as FLOPs^{exponent:.2f}"
    ]
    total = 4 * STAGE_START_S
    for chain in study.small_study_chains(params):
        seconds = stages_estimate(params, [chain.stages[0]], seconds_per_b0_image, exponent, baseline_costs)
        total += seconds
        lines.append(f"  chain {chain.name:<28} ~ {duration(seconds):>10}  ({' '.join(chain.stages)})")
    lines.append(f"  the small study, its chains one after another and the closing stages: about {duration(total)}")
    return lines


def stage_budgets(params: Params) -> dict[str, dict[str, Any]]:
    """Per group of training stages (search, train, scale), the budget of one network: what the plan stage writes.

    Each group's file holds only values that its stages already depend on (epochs, images,
    validation passes, base resolution; the search also its number of candidates), and no
    timing, so a change of one never re-runs a stage that would not have re-run anyway.
    """
    groups: dict[str, dict[str, Any]] = {}
    for job in budget(params):
        group = {"train_phi": "train", "train_baseline": "train"}.get(job.stage, job.stage)
        entry = groups.setdefault(
            group,
            {
                "base_resolution": params.network.base_resolution,
                "epochs": job.epochs,
                "train_images": job.train_images,
                "val_images": job.val_images,
                "val_passes": job.val_passes,
            },
        )
        if group == "search":
            entry["candidates"] = entry.get("candidates", 0) + 1
    return groups


def describe_device() -> tuple[str, Any]:
    """('cuda: NVIDIA H100 ... x1' or 'cpu (2 threads)', the torch.device training uses)."""
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        return f"cuda: {torch.cuda.get_device_name(0)} x{count}", torch.device("cuda")
    return f"cpu ({torch.get_num_threads()} threads)", torch.device("cpu")


WARMUP_STEPS = 2


def time_model(params: Params, device: Any, spec: Any, steps: int = 3, batch: int | None = None) -> float:
    """Seconds per training image of `spec` on `device`: this trainer's own step, as the stages run it.

    `effnet.train.TrainState.step` under params.yaml's recipe (channels_last, the precision
    rule of `effnet.train.autocast_dtype`: on a CPU bf16 for the baselines, fp32 for
    EfficientNets; label smoothing, clipping, EMA) on random images: the median of `steps`
    timed steps after `WARMUP_STEPS` untimed ones, with torch's default threads. (One warm-up
    step and the mean of three timed B0 at 141 images/s where it trains at 245.) The batch is the recipe's, capped
    at 128 on a CPU (a timing, not a run).
    """
    import dataclasses

    import torch

    from effnet.train import autocast_dtype, make_train_state

    size = batch or (min(params.train.batch_size, 128) if device.type == "cpu" else params.train.batch_size)
    cfg = dataclasses.replace(params.train, batch_size=size, compile=False)
    state = make_train_state(
        spec,
        cfg,
        device=device,
        total_steps=steps + 2,
        warmup_steps=0,
        amp_dtype=autocast_dtype(cfg.precision, device, arch=spec.arch),
    )
    state.model.train()
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    images = torch.randn(size, 3, spec.resolution, spec.resolution, device=device).contiguous(memory_format=layout)
    labels = torch.randint(0, spec.num_classes, (size,), device=device)
    for i in range(WARMUP_STEPS):  # the first steps pay for allocations and kernel selection
        float(state.step(images, labels, i)[0])
    times = []
    for i in range(steps):
        start = time.perf_counter()
        float(state.step(images, labels, WARMUP_STEPS + i)[0])  # the host waits for the step
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] / size  # the median step: one slow step does not move it


def time_b0(params: Params, device: Any, steps: int = 3, batch: int | None = None, variant: str = "b0") -> float:
    """Seconds per training image of B0 (or the published `variant`) at `network.base_resolution` (`time_model`)."""
    from effnet.models import published_spec

    return time_model(params, device, published_spec(variant, params.network), steps, batch)


def measure_baseline_costs(
    params: Params, device: Any, b0_seconds: float, steps: int = 2, batch: int | None = None
) -> dict[str, float]:
    """Each baseline's seconds per training image relative to B0's `b0_seconds`, timed on `device` (`time_model`).

    Timed, not modelled: per FLOP a baseline's time differs from an EfficientNet's by device and
    precision (on this project's CPU ResNet-50 trains in bf16 and B0 in fp32).
    """
    from effnet.models import spec_for_name

    return {
        m.name: time_model(params, device, spec_for_name(m.name, params.network), steps, batch) / b0_seconds
        for m in study.BASELINES
    }


CALIBRATION_VARIANT = "b3"  # timed beside B0 for the exponent: 4.6x its FLOPs, still quick to time
EXPONENT_RANGE = (0.2, 1.0)


def cost_exponent(b0_seconds: float, other_seconds: float, flops_ratio: float) -> float:
    """The exponent k with other / b0 = flops_ratio ** k (two timings of one device), within EXPONENT_RANGE."""
    k = math.log(other_seconds / b0_seconds) / math.log(flops_ratio)
    return min(max(k, EXPONENT_RANGE[0]), EXPONENT_RANGE[1])


def measure_cost_exponent(
    params: Params, device: Any, b0_seconds: float, steps: int = 2, batch: int | None = None
) -> float:
    """How a network's time grows with its FLOPs on `device`: B3 timed against `b0_seconds` (`cost_exponent`).

    On the 2-core CPU under load (issue 27) B0 at 8 px took 494 ms an image and B3 (4.6x the
    FLOPs) 913 ms: k = 0.40, where the FLOPs ratio alone (k = 1) had put B7 at 95x B0 and the
    smoke run's per-model lines 10-30x too high.
    """
    other = time_b0(params, device, steps=steps, batch=batch, variant=CALIBRATION_VARIANT)  # batch as B0's
    return cost_exponent(b0_seconds, other, RELATIVE_COST[f"efficientnet_{CALIBRATION_VARIANT}"])


def duration(seconds: float) -> str:
    """'3 days 4 h', '5 h 12 min', '7 min', '40 s'."""
    if seconds >= DAY:
        days = seconds / DAY
        return f"{days:,.0f} days" if days >= 10 else f"{int(days)} days {round(seconds % DAY / 3600)} h"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {round(seconds % 3600 / 60)} min"
    if seconds >= 60:
        return f"{round(seconds / 60)} min"
    return f"{max(1, round(seconds))} s"


def report(
    params: Params,
    device: str,
    seconds_per_b0_image: float,
    is_cpu: bool,
    exponent: float = 1.0,
    baseline_costs: dict[str, float] | None = None,
) -> list[str]:
    """The clock's lines: device, budget, estimate per stage and in all, and on a CPU what to run instead."""
    jobs = budget(params, exponent, baseline_costs)
    stages: dict[str, list[Job]] = {}
    for job in jobs:
        stages.setdefault(job.stage, []).append(job)
    stage_count = (
        sum(1 for job in jobs if job.stage != "search") + (1 if stages.get("search") else 0) + len(OTHER_STAGES)
    )
    fixed = STAGE_START_S * stage_count
    total = sum(job.b0_images for job in jobs) * seconds_per_b0_image + fixed
    lines = [
        f"clock: device {device}; B0 at {params.network.base_resolution} px trains at "
        f"{1 / seconds_per_b0_image:,.1f} images/s here (timed just now{_busy()}); "
        f"time grows as FLOPs^{exponent:.2f}"
    ]
    for stage, members in stages.items():
        first = members[0]
        seconds = sum(j.b0_images for j in members) * seconds_per_b0_image
        lines.append(
            f"  {stage:<15}{len(members):>3} network{'s' if len(members) != 1 else ' '}"
            f" x {first.epochs} epochs"
            f" x {first.train_images:,} images  ~ {duration(seconds)}"
        )
    lines.append(f"  starting {stage_count} stages, about {STAGE_START_S:.0f} s each  ~ {duration(fixed)}")
    lines.append(f"  whole run: about {duration(total)} on this device (an order of magnitude: see effnet/clock.py)")
    if is_cpu and total > DAY:
        lines.append(
            f"warning: on this CPU the run in params.yaml takes days. For a look at every stage in minutes "
            f"run the smoke run, `{SMOKE}`; for real results with a CPU-sized budget, the small study, "
            f"`{CPU_BUDGET}` (scripts/small.yaml, docs/small.md). Going on as asked."
        )
    return lines


def _busy() -> str:
    """', while the machine was busy (load 5.6 on 2 cores)' when other work shared the CPU during the timing."""
    try:
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
    except OSError:  # not available on every platform
        return ""
    return (
        f", while the machine was busy: load {load:.1f} on {cores} cores, so the estimate runs long"
        if load > cores
        else ""
    )


def model_line(
    name: str, names: list[str], params: Params, seconds_per_b0_image: float | None, exponent: float = 1.0
) -> str:
    """'matrix model 5/11: efficientnet_b4, about 3 h 10 min here (the 11 together about 190 days)'.

    Printed as each matrix stage starts. DVC may run the stages in any order, so the line
    gives the position in the matrix and the matrix's total, not a countdown.
    """
    index = names.index(name)
    head = f"matrix model {index + 1}/{len(names)}: {name}"
    if seconds_per_b0_image is None:
        return head + " (no timing of this device yet: python -m effnet.clock)"
    costs = {job.name: job.b0_images * seconds_per_b0_image for job in budget(params, exponent)}
    total = sum(costs.get(n, 0.0) for n in names)
    return f"{head}, about {duration(costs.get(name, 0.0))} here (the {len(names)} together about {duration(total)})"


def matrix_model_line(name: str, params: Params, timing: Path = Path("plan/timing.json")) -> str:
    """The line a matrix training stage prints as it starts, with the plan stage's timing when it fits this device."""
    device, _ = describe_device()
    seconds = load_timing(timing, device, params.network.base_resolution)
    return model_line(name, list(study.model_names()), params, seconds, load_exponent(timing))


def save_timing(
    path: Path, device: str, seconds_per_b0_image: float, base_resolution: int, exponent: float = 1.0
) -> None:
    """Keep this device's timing for the training stages' 'model 5/11' lines (a cache, not a result)."""
    from effnet.io import write_json

    write_json(
        path,
        {
            "device": device,
            "seconds_per_b0_image": seconds_per_b0_image,
            "cost_exponent": exponent,
            "base_resolution": base_resolution,
            "timed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


def load_exponent(path: Path) -> float:
    """The kept `cost_exponent` (1.0 when there is none)."""
    import json

    try:
        value = json.loads(Path(path).read_text()).get("cost_exponent", 1.0)
    except (OSError, ValueError, AttributeError):
        return 1.0
    return float(value) if isinstance(value, (int, float)) and value > 0 else 1.0


def load_timing(path: Path, device: str, base_resolution: int) -> float | None:
    """The kept timing if it was taken on this kind of device at this base resolution, else None."""
    import json

    try:
        kept = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if kept.get("device") != device or kept.get("base_resolution") != base_resolution:
        return None
    value = kept.get("seconds_per_b0_image")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


# `scripts/gpu.py unpack` copies a lease's benchmark (the lease job's bench.json, docs/lease.md) here
LEASE_BENCH = Path("benchmarks/bench_lease.json")


def load_lease_bench(path: Path = LEASE_BENCH) -> dict[str, Any] | None:
    """A lease's benchmark record, or None when there is none (or it is unreadable)."""
    import json

    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def lease_rates(bench: dict[str, Any], variant: str = "recipe") -> dict[str, float]:
    """{model: training images/s} of a lease benchmark's rows of `variant` (effnet.lease_job.run_rows's file, written
    by scripts/lease_job.py), rows with an error left out."""
    return {
        row["model"]: float(row["images_per_s"])
        for row in bench.get("rows", [])
        if row.get("kind") == "train"
        and row.get("variant", "recipe") == variant
        and "error" not in row
        and row.get("images_per_s")
    }


def gpu_lines(params: Params, bench: dict[str, Any] | None, source: Path = LEASE_BENCH) -> list[str]:
    """The run in params.yaml on a lease's GPU, each figure labelled: from a rate the lease measured, or estimated.

    A matrix model with a row of its own in the lease's benchmark costs its training images at
    its measured rate ("measured rate"); every other network (the search's candidates, the phi
    model, the scaling study, a matrix model without a row) costs its FLOPs ratio to B0 at B0's
    measured rate, time following FLOPs ("estimated"). Without a lease benchmark, or without B0
    in it, there is no GPU figure at all: the lines say so. The rates come from the benchmark's
    synthetic data at its batch size, and the stage starts (`STAGE_START_S`) and validation
    passes are counted as on the CPU, so even a "measured rate" line is an estimate of a run.
    """
    rates = lease_rates(bench or {})
    b0 = rates.get("efficientnet_b0")
    if b0 is None:
        return [
            f"clock (GPU): no lease benchmark with B0 at {source}: no GPU figure is measured; "
            "the GPU times of docs/lease.md and the windows are estimates"
        ]
    baselines = {m.name: b0 / rates[m.name] for m in study.matrix() if m.is_baseline and m.name in rates}
    jobs = budget(params, 1.0, baselines)
    seconds_per_b0_image = 1 / b0
    lines = [
        f"clock (GPU): {bench.get('device', '?')}, from the lease benchmark {source} "
        f"({bench.get('data', '?')} data, batch {bench.get('batch_size', '?')}): B0 trains at {b0:,.0f} images/s "
        "(measured); lines marked 'estimated' scale B0's rate by FLOPs"
    ]
    measured_s = estimated_s = 0.0
    others: dict[str, list[float]] = {}
    for job in jobs:
        seconds = job.b0_images * seconds_per_b0_image
        if job.stage in ("train", "train_baseline") and job.name in rates:
            if job.stage == "train":  # its own rate, in place of its FLOPs ratio
                seconds *= (b0 / rates[job.name]) / RELATIVE_COST[job.name]
            measured_s += seconds
            lines.append(
                f"  {job.name:<20} {job.epochs} epochs  ~ {duration(seconds):>12}  measured rate "
                f"({rates[job.name]:,.0f} images/s)"
            )
        elif job.stage in ("train", "train_baseline"):
            estimated_s += seconds
            lines.append(
                f"  {job.name:<20} {job.epochs} epochs  ~ {duration(seconds):>12}  estimated "
                "(no row in the lease benchmark)"
            )
        else:
            estimated_s += seconds
            others.setdefault(job.stage, []).append(seconds)
    for stage, members in others.items():
        lines.append(
            f"  {stage:<20} {len(members)} networks  ~ {duration(sum(members)):>12}  estimated "
            "(FLOPs ratio at B0's measured rate)"
        )
    lines.append(
        f"  images alone: {duration(measured_s)} from measured rates, {duration(estimated_s)} estimated; "
        f"stage starts ({STAGE_START_S:.0f} s each, the CPU's) not counted: an estimate"
    )
    return lines


def main(argv: list[str] | None = None, out: Callable[[str], Any] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--overrides", type=Path, help="a profile of dotted overrides, e.g. scripts/small.yaml")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps of B0")
    parser.add_argument("--model-line", metavar="MODEL", help="only the line a matrix model's training starts with")
    parser.add_argument(
        "--chains",
        action="store_true",
        help="the estimate of each chain of the small study (study.yaml small_study) and of all",
    )
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="the run on a lease's GPU, from its benchmark (--lease-bench), without timing here",
    )
    parser.add_argument("--lease-bench", type=Path, default=LEASE_BENCH)
    parser.add_argument(
        "--stages",
        nargs="+",
        metavar="STAGE",
        help="only the estimate, in seconds, of these training stages and their evaluation (a chain)",
    )
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, args.overrides)
    except (ConfigError, OSError) as error:  # a bad or missing params.yaml: one line, exit 1
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.model_line:
        out(matrix_model_line(args.model_line, params))
        return 0
    if args.gpu:
        for line in gpu_lines(params, load_lease_bench(args.lease_bench), args.lease_bench):
            out(line)
        return 0
    device, torch_device = describe_device()
    seconds = time_b0(params, torch_device, steps=args.steps)
    exponent = measure_cost_exponent(params, torch_device, seconds)
    baselines = measure_baseline_costs(params, torch_device, seconds)
    if args.chains:
        for line in chain_lines(params, device, seconds, exponent, baselines):
            out(line)
        return 0
    if args.stages:
        try:
            out(f"{stages_estimate(params, args.stages, seconds, exponent, baselines):.0f}")
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    for line in report(params, device, seconds, torch_device.type == "cpu", exponent, baselines):
        out(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
