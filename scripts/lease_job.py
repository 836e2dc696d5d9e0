#!/usr/bin/env python3
"""The lease's background job (docs/lease.md, "The plan: three calls"): benchmark, wait for the data, train, evaluate.

    device (call 1, detached):  python3 scripts/lease_job.py --deadline-file /root/lease/deadline

Phase 1, on synthetic data: the bf16 matmul and device copy ceilings, then this trainer's step
(`benchmarks/bench_train.py`'s `bench_fitting`: halving the batch on out-of-memory) on every
model of study.yaml's matrix, B0 and ResNet-50 first, 10 warm-up and 30 timed steps each, then
torch.compile variants of those two while the data is not ready yet. Each row goes to
`<lease-dir>/bench.json` as it is measured; no row starts when the deadline (read again each
time) leaves less than the row and `--reserve-s` for phase 2 (`effnet.lease_job.run_rows`).

Phase 2: wait for `data/ready.json` (`scripts/carry.py prepare`), choose the epochs of B0 and
ResNet-50 (params.yaml's full profile, 32 px) from the rates just measured so that both runs and
their evaluation end before the deadline (`effnet.lease_job.choose_epochs`), and run them as
`scripts/gpu.py run` does (dvc.yaml's train, evaluate and collect stages, no dvc; the trainer
under EFFNET_DEADLINE, exit 75 to resume) into `<lease-dir>/out`. Then `<lease-dir>/done`.
Every figure of time here other than the measured rows is an estimate.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType, SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
MUST_MODELS = ("efficientnet_b0", "resnet50")  # trained in phase 2: timed first


def load_script(path: Path, name: str) -> ModuleType:
    """A script of the tree as a module (benchmarks/ and scripts/ are not packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a dataclass looks its module up there (scripts/gpu.py's do)
    spec.loader.exec_module(module)
    return module


def say(message: str) -> None:
    print(f"[lease_job {time.strftime('%H:%M:%S')}] {message}", flush=True)


def copy_gbps(device, mib: int, repeats: int = 10) -> float:
    """GB/s of a device-to-device copy of `mib` MiB (read and write counted): the memory ceiling."""
    import torch

    a = torch.empty(mib * 2**20, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        b.copy_(a)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    del a, b
    return 2 * mib * 2**20 * repeats / seconds / 1e9


def benchmark(args, clock=time.time) -> dict:
    """Phase 1: the rows of bench.json (see the module docstring)."""
    import torch

    from effnet.data import load_meta, load_split, prepare
    from effnet.download import read_cifar100
    from effnet.lease_job import Row, run_rows
    from effnet.study import model_names
    from effnet.synthetic import write_synthetic_archive

    bench = load_script(ROOT / "benchmarks" / "bench_train.py", "bench_train")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        bench.fast_cuda()
    scratch = Path(tempfile.mkdtemp(prefix="lease-bench-"))
    try:
        archive = scratch / "cifar-100-python.tar.gz"
        md5 = write_synthetic_archive(archive, train_per_class=args.synthetic_per_class, test_per_class=1)
        prepare(
            read_cifar100(archive),
            scratch / "cifar100",
            val_per_class=max(1, args.synthetic_per_class // 10),
            seed=0,
            source_md5=md5,
        )
        train, meta = load_split(scratch / "cifar100", "train"), load_meta(scratch / "cifar100")
        options = SimpleNamespace(
            batch_size=args.batch_size, warmup_steps=args.warmup_steps, steps=args.steps, compile=False, cpu_bf16=False
        )
        ceilings: dict[str, float | None] = {}

        def matmul() -> dict:
            ceilings["matmul_tflops"] = bench.matmul_tflops(device)
            return {"kind": "matmul", "tflops": ceilings["matmul_tflops"], "note": "bf16 8192-cube, CUDA only"}

        def copy() -> dict:
            return {"kind": "copy", "gbps": copy_gbps(device, 1024 if cuda else 64), "mib": 1024 if cuda else 64}

        def trainer(name: str, variant: str, **kwargs) -> Row:
            def measure() -> dict:
                try:
                    row = bench.bench_fitting(name, train, meta, options, device, **kwargs)
                finally:
                    if cuda:
                        torch.cuda.empty_cache()
                rate = options.steps * row["batch"] / row["seconds"]
                tflops = 6 * row["macs"] * rate / 1e12
                peak = ceilings.get("matmul_tflops")
                return {
                    "kind": "train",
                    "model": name,
                    "variant": variant,
                    "batch": row["batch"],
                    "resolution": row["resolution"],
                    "images_per_s": rate,
                    "ms_per_step": 1000 * row["seconds"] / options.steps,
                    "macs": row["macs"],
                    "tflops": tflops,
                    "share_of_matmul": tflops / peak if peak else None,
                    "peak_gib": row["peak"],
                    "setup": row["setup"],
                }

            return Row(
                f"{name} {variant}",
                args.row_estimate_s * (3 if variant != "recipe" else 1),
                measure,
                optional=variant != "recipe",
            )

        names = [*MUST_MODELS, *(n for n in model_names() if n not in MUST_MODELS)]
        rows = [
            Row("matmul", 5.0, matmul),
            Row("copy", 3.0, copy),
            *(trainer(n, "recipe") for n in names),
            *(trainer(n, "compile", compile_mode="default") for n in MUST_MODELS),
        ]
        header = {
            "device": torch.cuda.get_device_name(device) if cuda else "cpu",
            "torch": torch.__version__,
            "data": "synthetic",
            "warmup_steps": options.warmup_steps,
            "steps": options.steps,
            "batch_size": options.batch_size,
            "started": clock(),
            "note": "measured on the lease's machine; every other figure of the plan is an estimate",
        }
        return run_rows(
            rows,
            args.lease_dir / "bench.json",
            deadline_file=args.deadline_file,
            reserve_s=args.reserve_s,
            clock=clock,
            header=header,
            skip_optional=lambda: args.ready.exists(),
            log=say,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def train_and_evaluate(args, bench_record: dict, record: dict) -> int:
    """Phase 2: the epochs from the measured rates, then dvc.yaml's stages as `scripts/gpu.py run` runs them."""
    import yaml

    from effnet import clock as effnet_clock
    from effnet.config import apply_overrides, params_from_dict
    from effnet.io import write_json
    from effnet.lease_job import choose_epochs, final_evaluation_s, time_left, wait_for

    if not wait_for(args.ready, deadline_file=args.deadline_file, reserve_s=args.reserve_s):
        record["phase2"] = f"{args.ready} never came, with under {args.reserve_s:.0f} s left: nothing trained"
        return 1
    ready_at = args.ready.stat().st_mtime
    for _ in range(15):  # the second call refreshes the deadline; wait briefly for it if it came after the flag
        if args.deadline_file.stat().st_mtime >= ready_at:
            break
        time.sleep(1)
    overrides = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)}
    # as the window will apply them (gpu.py write_params), so that the epochs fit what runs
    params = params_from_dict(apply_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides))
    data, train = params.data, params.train
    val = effnet_clock.CLASSES * data.val_per_class
    final = (
        effnet_clock.CLASSES * params.evaluate.images_per_class * 2
        if params.evaluate.images_per_class
        else val + effnet_clock.TEST_IMAGES
    )
    rates = effnet_clock.lease_rates(bench_record)
    models = list(MUST_MODELS)
    measured = [m for m in models if rates.get(m)]  # choose_epochs names any model without a rate
    evaluate_s = (
        3 * args.stage_start_s  # two evaluate stages and collect; each evaluates every seed
        + final_evaluation_s(rates, measured, final_images=final, eval_cost=effnet_clock.EVAL_COST, seeds=train.seeds)
    )
    left = time_left(args.deadline_file)
    plan = choose_epochs(
        rates,
        models,
        time_left_s=left - args.pack_s - evaluate_s - 20,
        train_images=effnet_clock._train_images(train.train_per_class, data.val_per_class),
        val_images=val,
        val_passes=2 if train.ema_decay > 0 else 1,
        final_images=0,
        eval_cost=effnet_clock.EVAL_COST,
        stage_start_s=args.stage_start_s,
        stages=len(models),
        stop_s=args.stop_s,
        max_epochs=train.epochs,
        seeds=train.seeds,
    )
    record["plan"] = {
        "epochs": plan.epochs,
        "fits": plan.fits,
        "per_epoch_s": plan.per_epoch_s,
        "training_s": plan.expected_s,
        "evaluate_s": evaluate_s,
        "time_left_s": left,
        "rates": {m: rates[m] for m in models},
        "note": "per-epoch times from the benchmark's rates (synthetic data, its batch): estimates",
    }
    write_json(args.lease_dir / "job.json", record)
    say(
        f"phase 2: {left:.0f} s left; {plan.epochs} epochs of {', '.join(models)} "
        f"(about {plan.expected_s:.0f} s of training, {evaluate_s:.0f} s of evaluation; fits: {plan.fits})"
    )
    window = {
        "name": "lease",
        "coefficients": "published",
        "models": models,
        "reserve_s": {"pack": args.pack_s, "evaluate": round(evaluate_s)},
        "params": {**overrides, "train.epochs": plan.epochs},
        "estimates": {m: [round(s, 1), round(s, 1)] for m, s in plan.per_epoch_s.items()},
    }
    window_path = args.lease_dir / "window.yaml"
    window_path.write_text(yaml.safe_dump(window, sort_keys=False))
    gpu = load_script(ROOT / "scripts" / "gpu.py", "gpu_recipe")
    return gpu.run_window(
        window_path,
        root=ROOT,
        out=args.lease_dir / "out",
        store=args.store,
        limit_s=time_left(args.deadline_file),
        only=[],
        prepared=True,
    )


def main(argv: list[str] | None = None) -> int:
    from effnet import clock as effnet_clock
    from effnet.io import write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline-file", type=Path, required=True, help="seconds since the epoch; re-read often")
    parser.add_argument(
        "--lease-dir",
        type=Path,
        help="where bench.json, job.json, out/ and done go (default: the deadline file's folder)",
    )
    parser.add_argument("--ready", type=Path, default=ROOT / "data" / "ready.json")
    parser.add_argument("--store", type=Path, default=Path("/root/carry-data"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--synthetic-per-class", type=int, default=100)
    parser.add_argument("--row-estimate-s", type=float, default=15.0, help="a row's time before any is measured")
    parser.add_argument(
        "--reserve-s",
        type=float,
        default=240.0,
        help="what phase 2 needs at least (an estimate): the benchmark stops short of it",
    )
    parser.add_argument("--stage-start-s", type=float, default=effnet_clock.STAGE_START_S)
    parser.add_argument("--pack-s", type=float, default=30.0, help="the run's own packing into out/")
    parser.add_argument("--stop-s", type=float, default=30.0, help="a trainer's stop after its deadline")
    parser.add_argument("--bench-only", action="store_true", help="phase 1 only")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a dotted params override of the training window (the CPU dry run's smaller profile; "
        "a lease runs params.yaml as it is)",
    )
    args = parser.parse_args(argv)
    args.lease_dir = args.lease_dir or args.deadline_file.parent
    args.lease_dir.mkdir(parents=True, exist_ok=True)
    (args.lease_dir / "done").unlink(missing_ok=True)
    record: dict = {"started": time.time(), "argv": sys.argv[1:]}
    write_json(args.lease_dir / "job.json", record)
    status = 1
    try:
        bench_record = benchmark(args)
        record["bench"] = {
            "rows": len(bench_record["rows"]),
            "skipped": bench_record["skipped"],
            "stopped": bench_record["stopped"],
        }
        say(
            f"phase 1: {len(bench_record['rows'])} rows, skipped {len(bench_record['skipped'])}"
            + (f" ({bench_record['stopped']})" if bench_record["stopped"] else "")
        )
        status = 0 if args.bench_only else train_and_evaluate(args, bench_record, record)
    except BaseException as error:  # the done flag must still come, with what went wrong
        record["error"] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    finally:
        record.update(exit=status, finished=time.time())
        write_json(args.lease_dir / "job.json", record)
        write_json(args.lease_dir / "done", {"exit": status, "finished": record["finished"]})
        say(f"done, exit {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
