"""The `search` stage's body: place the grid, train each distinct network once, write the results.

Apart from `effnet.search` (the grid, the placing at matched FLOPs, the resumable loop, the
choice), so that the plan stage, which counts the candidates, does not depend on the trainer.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from effnet.checkpoint import remove_checkpoint
from effnet.config import Params
from effnet.data import load_meta
from effnet.distributed import cleanup, init_distributed
from effnet.fingerprint import fingerprint
from effnet.io import write_csv, write_json
from effnet.models import build_model, count_parameters, published_spec
from effnet.search import (
    TABLE_COLUMNS,
    Placed,
    choose,
    grid_candidates,
    group_identical,
    place,
    run_search,
    summary,
    table_rows,
)
from effnet.train import train


def search_stage(params: Params, *, data: Path, out: Path, table: Path, scratch: Path, code: list[Path]) -> None:
    """The `search` stage: place the grid (`place`), train each distinct network once with resumable
    results in `scratch` (`run_search`), then on rank 0 write the chosen coefficients (`out`) and
    the table of all candidates (`table`) and delete `scratch`. `code`: the files whose import
    closure stamps the finished networks (the stage script)."""
    candidates = grid_candidates(params.search)  # an infeasible grid stops here too
    net, search = params.network, params.search
    cfg = replace(params.train, epochs=search.epochs, train_per_class=search.train_per_class)
    b0 = replace(published_spec("b0", net), drop_path_rate=cfg.drop_path_rate)
    placed = place(candidates, b0, search.flops_target, search.flops_tolerance)
    groups = group_identical(placed)
    if not groups:
        raise ValueError(f"no candidate's network gets within search.flops_tolerance {search.flops_tolerance:g} of "
                         f"{search.flops_target:g}x B0's FLOPs; raise search.flops_tolerance or widen the grid")
    meta = load_meta(data)
    settings = fingerprint({"train": asdict(cfg), "network": asdict(net),
                            "flops_target": search.flops_target,
                            "data": [meta["source_md5"], meta["val_per_class"], meta["seed"]]},
                           code=code)  # the stage and the library code it imports

    dist = init_distributed()
    if dist.is_main:
        for p in placed:
            if not p.feasible:
                print(f"[{p.candidate.key}] infeasible: its nearest network costs {p.flops_ratio:.3f}x B0's FLOPs, not "
                      f"{search.flops_target:g}x within search.flops_tolerance {search.flops_tolerance:g}; not trained")
        for g in groups:
            if len(g) > 1:
                keys = ", ".join(p.candidate.key for p in g)
                print(f"[{keys}] build the same network ({g[0].architecture}): trained once")

    def train_network(p: Placed) -> dict[str, Any]:
        directory = scratch / p.architecture
        result = train(p.spec, cfg, data, checkpoint_dir=directory, dist=dist)
        if dist.is_main:
            remove_checkpoint(directory)
        return {"params": count_parameters(build_model(p.spec)), "val_top1": result.metrics["val/top1"],
                "val_top1_ema": result.metrics["val/top1_ema"], "train_time_s": result.train_time_s}

    try:
        records = run_search(groups, train_network, scratch / settings, settings,
                             log=print if dist.is_main else None, write=dist.is_main)
    finally:
        cleanup()
    if dist.is_main:
        chosen = choose(groups, records)
        write_csv(table, table_rows(placed, groups, records, chosen), TABLE_COLUMNS)
        result = summary(placed, groups, records, chosen, search.flops_target, search.flops_tolerance)
        write_json(out, result)
        shutil.rmtree(scratch, ignore_errors=True)  # outputs written: the next forced run really retrains
        best = chosen[0]
        paper = result.get("paper") or {}
        point = best.candidate
        print(f"chose alpha={point.alpha:g} beta={point.beta:g} gamma={point.gamma:g} at phi "
              f"{best.phi:.3f} (val top-1 {result['val_top1']:.4f}; the paper's point: "
              f"{'infeasible' if paper.get('val_top1') is None else format(paper['val_top1'], '.4f')}) -> {out}")
        if len(chosen) > 1:
            keys = ", ".join(p.candidate.key for p in chosen[1:])
            print(f"not identifiable by the data: {keys} built the same network")
