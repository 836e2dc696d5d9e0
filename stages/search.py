"""DVC stage `search`: the grid search for (alpha, beta, gamma) at equal real cost (paper Section 3.3, step 1).

    python stages/launch.py stages/search.py
        [--params params.yaml] [--data data/cifar100] [--out metrics/search.json] [--table plots/search.csv]
        [--scratch checkpoints/search]

Every candidate of the grid is placed at the phi where its real network costs
`search.flops_target` x B0's FLOPs (within `search.flops_tolerance`, else it is reported as
infeasible and not trained); candidates that then build the same network are trained once.
Each network trains with the short budget of `search:`, the recipe of `train:` and the
regularisation of the target (`effnet.scaling.target_dropout`, `train.drop_path_rate`), and
is scored on the validation split (the test split is never read). Each finished network is
written to `--scratch` at once, so an interrupted search resumes where it stopped; once the
outputs are written the scratch directory is deleted, so `dvc repro -f search` retrains.
Writes the chosen coefficients (`--out`) and the table of all candidates (`--table`).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, for `effnet` and `stages`

from effnet.config import Params  # noqa: E402
from effnet.data import load_meta  # noqa: E402
from effnet.distributed import cleanup, init_distributed  # noqa: E402
from effnet.fingerprint import fingerprint  # noqa: E402
from effnet.io import write_csv, write_json  # noqa: E402
from effnet.models import build_model, count_parameters, spec_for_name  # noqa: E402
from effnet.search import (TABLE_COLUMNS, choose, grid_candidates, group_identical, place, run_search, summary,  # noqa: E402
                           table_rows)
from effnet.train import remove_checkpoint, train  # noqa: E402
from stages import cli  # noqa: E402


def run(args: argparse.Namespace, params: Params) -> int:
    candidates = grid_candidates(params.search)  # an infeasible grid stops here too
    net, search = params.network, params.search
    cfg = dataclasses.replace(params.train, epochs=search.epochs, train_per_class=search.train_per_class)
    b0 = dataclasses.replace(spec_for_name("efficientnet_b0", regime=net.regime, cifar_downsample=net.cifar_downsample,
                                           num_classes=net.num_classes, base_resolution=net.base_resolution),
                             drop_path_rate=cfg.drop_path_rate)
    placed = place(candidates, b0, search.flops_target, search.flops_tolerance)
    groups = group_identical(placed)
    if not groups:
        raise ValueError(f"no candidate's network gets within search.flops_tolerance {search.flops_tolerance:g} of "
                         f"{search.flops_target:g}x B0's FLOPs; raise search.flops_tolerance or widen the grid")
    meta = load_meta(args.data)
    settings = fingerprint({"train": dataclasses.asdict(cfg), "network": dataclasses.asdict(net),
                            "flops_target": search.flops_target,
                            "data": [meta["source_md5"], meta["val_per_class"], meta["seed"]]},
                           code=[Path(__file__)])  # this stage and the library code it imports

    dist = init_distributed()
    if dist.is_main:
        for p in placed:
            if not p.feasible:
                print(f"[{p.candidate.key}] infeasible: its nearest network costs {p.flops_ratio:.3f}x B0's FLOPs, not "
                      f"{search.flops_target:g}x within search.flops_tolerance {search.flops_tolerance:g}; not trained")
        for g in groups:
            if len(g) > 1:
                print(f"[{', '.join(p.candidate.key for p in g)}] build the same network ({g[0].architecture}): trained once")

    def train_network(p):
        scratch = args.scratch / p.architecture
        result = train(p.spec, cfg, args.data, checkpoint_dir=scratch, dist=dist)
        if dist.is_main:
            remove_checkpoint(scratch)
        return {"params": count_parameters(build_model(p.spec)), "val_top1": result.metrics["val/top1"],
                "val_top1_ema": result.metrics["val/top1_ema"], "train_time_s": result.train_time_s}

    try:
        records = run_search(groups, train_network, args.scratch / settings, settings,
                             log=print if dist.is_main else None, write=dist.is_main)
    finally:
        cleanup()
    if dist.is_main:
        chosen = choose(groups, records)
        write_csv(args.table, table_rows(placed, groups, records, chosen), TABLE_COLUMNS)
        result = summary(placed, groups, records, chosen, search.flops_target, search.flops_tolerance)
        write_json(args.out, result)
        shutil.rmtree(args.scratch, ignore_errors=True)  # outputs written: the next forced run really retrains
        best = chosen[0]
        paper = result.get("paper") or {}
        print(f"chose alpha={best.candidate.alpha:g} beta={best.candidate.beta:g} gamma={best.candidate.gamma:g} at phi "
              f"{best.phi:.3f} (val top-1 {result['val_top1']:.4f}; the paper's point: "
              f"{'infeasible' if paper.get('val_top1') is None else format(paper['val_top1'], '.4f')}) -> {args.out}")
        if len(chosen) > 1:
            print(f"not identifiable by the data: {', '.join(p.candidate.key for p in chosen[1:])} built the same network")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--data", default="data/cifar100", type=Path, help="prepared arrays (download stage)")
    parser.add_argument("--out", default="metrics/search.json", type=Path, help="the chosen coefficients")
    parser.add_argument("--table", default="plots/search.csv", type=Path, help="every candidate")
    parser.add_argument("--scratch", default="checkpoints/search", type=Path,
                        help="finished networks and checkpoints (deleted once the outputs are written)")
    return cli.main(parser, run, argv, lock=lambda args: args.scratch)


if __name__ == "__main__":
    sys.exit(main())
