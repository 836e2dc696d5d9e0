"""DVC stage `search`: the grid search for (alpha, beta, gamma) at phi = 1 (paper Section 3.3, step 1).

    python stages/launch.py stages/search.py
        [--params params.yaml] [--data data/cifar100] [--out metrics/search.json] [--table plots/search.csv]
        [--scratch checkpoints/search]

Every feasible candidate is B0 really scaled at phi = 1 (depth alpha, width beta,
resolution gamma x base), trained with the short budget of `search:` and the recipe of
`train:`, and scored on the validation split (the test split is never read). Each finished
candidate is written to `--scratch` at once, so an interrupted search resumes where it
stopped. Writes the chosen coefficients (`--out`) and the table of all candidates (`--table`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, for `effnet` and `stages`

from effnet.config import Params  # noqa: E402
from effnet.data import load_meta  # noqa: E402
from effnet.distributed import cleanup, init_distributed  # noqa: E402
from effnet.models import build_model, compound_spec, count_flops, count_parameters  # noqa: E402
from effnet.fingerprint import fingerprint  # noqa: E402
from effnet.search import choose, grid_candidates, run_search  # noqa: E402
from effnet.train import remove_checkpoint, train  # noqa: E402
from effnet.io import write_csv, write_json  # noqa: E402
from stages import cli  # noqa: E402

COLUMNS = ["alpha", "beta", "gamma", "constraint", "resolution", "params", "flops", "flops_ratio", "val_top1",
           "val_top1_ema", "train_time_s", "paper", "chosen"]


def run(args: argparse.Namespace, params: Params) -> int:
    candidates = grid_candidates(params.search)  # an infeasible grid stops here too
    net = params.network
    cfg = dataclasses.replace(params.train, epochs=params.search.epochs, train_per_class=params.search.train_per_class)
    spec_args = dict(regime=net.regime, cifar_downsample=net.cifar_downsample, num_classes=net.num_classes,
                     base_resolution=net.base_resolution)
    b0_flops = count_flops(build_model(compound_spec(0.0, (1.0, 1.0, 1.0), **spec_args)))
    meta = load_meta(args.data)
    settings = fingerprint({"train": dataclasses.asdict(cfg), "network": dataclasses.asdict(net),
                            "data": [meta["source_md5"], meta["val_per_class"], meta["seed"]]},
                           code=[Path(__file__)])  # this stage and the library code it imports

    dist = init_distributed()

    def train_candidate(candidate):
        spec = compound_spec(1.0, candidate.coefficients, name=f"search_{candidate.key}", **spec_args)
        model = build_model(spec)
        flops = count_flops(model)
        if dist.is_main:
            print(f"[{candidate.key}] {spec.resolution}x{spec.resolution}, {flops / b0_flops:.2f}x B0's FLOPs")
        start = time.perf_counter()
        result = train(spec, cfg, args.data, checkpoint_dir=args.scratch / candidate.key, dist=dist)
        if dist.is_main:
            remove_checkpoint(args.scratch / candidate.key)
        return {"resolution": spec.resolution, "params": count_parameters(model), "flops": flops,
                "flops_ratio": flops / b0_flops, "val_top1": result.metrics["val/top1"],
                "val_top1_ema": result.metrics["val/top1_ema"], "train_time_s": time.perf_counter() - start}

    def report(record, reused):
        if dist.is_main:
            print(f"  a={record['alpha']:g} b={record['beta']:g} g={record['gamma']:g}: constraint {record['constraint']:.3f}, "
                  f"val top-1 {record['val_top1']:.4f}{' (finished earlier)' if reused else ''}")

    try:
        records = run_search(candidates, train_candidate, args.scratch / settings, settings, on_result=report,
                             write=dist.is_main)
    finally:
        cleanup()
    if dist.is_main:
        best = choose(records)
        paper = next(r for r in records if r["paper"])
        rows = [{**{k: r[k] for k in COLUMNS if k != "chosen"}, "chosen": r is best} for r in records]
        write_csv(args.table, rows, COLUMNS)
        write_json(args.out, {"alpha": best["alpha"], "beta": best["beta"], "gamma": best["gamma"],
                              "constraint": best["constraint"], "val_top1": best["val_top1"],
                              "flops_ratio": best["flops_ratio"], "candidates": len(records),
                              "selected_on": "validation top-1 (raw weights)",
                              "paper": {k: paper[k] for k in ("alpha", "beta", "gamma", "constraint", "val_top1", "flops_ratio")}})
        print(f"chose alpha={best['alpha']:g} beta={best['beta']:g} gamma={best['gamma']:g} "
              f"(val top-1 {best['val_top1']:.4f}; the paper's point: {paper['val_top1']:.4f}) -> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--data", default="data/cifar100", type=Path, help="prepared arrays (download stage)")
    parser.add_argument("--out", default="metrics/search.json", type=Path, help="the chosen coefficients")
    parser.add_argument("--table", default="plots/search.csv", type=Path, help="every candidate")
    parser.add_argument("--scratch", default="checkpoints/search", type=Path, help="finished candidates and checkpoints")
    return cli.main(parser, run, argv, lock=lambda args: args.scratch)


if __name__ == "__main__":
    sys.exit(main())
