"""The `search` stage's body: place the grid, train each distinct network with `search.seeds` seeds, decide, write.

Apart from `effnet.search` (the grid, the placing at matched FLOPs, the resumable loop, the
decision), so that the plan stage, which counts the candidates, does not depend on the trainer.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from effnet.checkpoint import remove_checkpoint
from effnet.config import Params
from effnet.data import DeviceLoader, load_meta, load_split
from effnet.distributed import cleanup, init_distributed
from effnet.fingerprint import fingerprint
from effnet.io import write_csv, write_json
from effnet.models import build_model, count_parameters, published_spec
from effnet.search import (
    TABLE_COLUMNS,
    Placed,
    decide,
    grid_candidates,
    group_identical,
    place,
    run_search,
    summary,
    table_rows,
)
from effnet.train import train


@torch.no_grad()
def val_correct(
    model: torch.nn.Module, data: Path, resolution: int, batch_size: int, device: torch.device
) -> list[int]:
    """1/0 per validation image (in the split's order): is the raw network's top-1 class right?

    On one process and the whole split (not a rank's share): the paired comparisons of the
    search need the same images in the same order for every network and seed.
    """
    meta, split = load_meta(data), load_split(data, "val")
    loader = DeviceLoader(
        split.images,
        split.fine_labels,
        batch_size=batch_size,
        train=False,
        device=device,
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        resolution=resolution,
    )
    model.eval()
    out: list[int] = []
    for images, labels in loader:
        out += (model(images).argmax(dim=1) == labels).int().cpu().tolist()
    return out


def search_stage(params: Params, *, data: Path, out: Path, table: Path, scratch: Path, code: list[Path]) -> None:
    """The `search` stage: place the grid (`place`), train each distinct network with `search.seeds` seeds
    (seed k with `train.seed + k`; resumable results in `scratch`, `run_search`), decide (`decide`), then on
    rank 0 write the decision (`out`) and the table of all candidates (`table`) and delete `scratch`.
    `code`: the files whose import closure stamps the finished networks (the stage script)."""
    candidates = grid_candidates(params.search)  # an infeasible grid stops here too
    net, search = params.network, params.search
    cfg = replace(params.train, epochs=search.epochs, train_per_class=search.train_per_class, seeds=1)
    b0 = replace(published_spec("b0", net), drop_path_rate=cfg.drop_path_rate)
    placed = place(candidates, b0, search.flops_target, search.flops_tolerance)
    groups = group_identical(placed)
    if not groups:
        raise ValueError(
            f"no candidate's network gets within search.flops_tolerance {search.flops_tolerance:g} of "
            f"{search.flops_target:g}x B0's FLOPs; raise search.flops_tolerance or widen the grid"
        )
    meta = load_meta(data)
    settings = fingerprint(
        {
            "train": asdict(cfg),
            "network": asdict(net),
            "flops_target": search.flops_target,
            "data": [meta["source_md5"], meta["val_per_class"], meta["seed"]],
        },
        code=code,
    )  # the stage and the library code it imports

    dist = init_distributed()
    if dist.is_main:
        for p in placed:
            if not p.feasible:
                print(
                    f"[{p.candidate.key}] infeasible: its nearest network costs {p.flops_ratio:.3f}x B0's FLOPs, not "
                    f"{search.flops_target:g}x within search.flops_tolerance {search.flops_tolerance:g}; not trained"
                )
        for g in groups:
            if len(g) > 1:
                keys = ", ".join(p.candidate.key for p in g)
                print(f"[{keys}] build the same network ({g[0].architecture}): trained once")

    def train_network(p: Placed, k: int) -> dict[str, Any]:
        seed_cfg = replace(cfg, seed=cfg.seed + k)
        directory = scratch / f"{p.architecture}_seed{k}"
        result = train(p.spec, seed_cfg, data, checkpoint_dir=directory, dist=dist)
        if dist.is_main:
            remove_checkpoint(directory)
        correct = val_correct(result.model, data, p.spec.resolution, cfg.eval_batch_size, dist.device)
        return {
            "seed": seed_cfg.seed,
            "params": count_parameters(build_model(p.spec)),
            "val_top1": result.metrics["val/top1"],
            "val_top1_ema": result.metrics["val/top1_ema"],
            "train_time_s": result.train_time_s,
            "val_correct": correct,
        }

    try:
        records = run_search(
            groups,
            train_network,
            scratch / settings,
            settings,
            seeds=search.seeds,
            log=print if dist.is_main else None,
            write=dist.is_main,
        )
    finally:
        cleanup()
    if dist.is_main:
        decision = decide(groups, records)
        write_csv(table, table_rows(placed, groups, records, decision), TABLE_COLUMNS)
        result = summary(placed, groups, records, decision, search.flops_target, search.flops_tolerance, search.seeds)
        write_json(out, result)
        shutil.rmtree(scratch, ignore_errors=True)  # outputs written: the next forced run really retrains
        print(
            f"decision: {decision.outcome}, alpha={result['alpha']:g} beta={result['beta']:g} "
            f"gamma={result['gamma']:g}: {decision.reason} -> {out}"
        )
        if len(decision.chosen) > 1:
            keys = ", ".join(p.candidate.key for p in decision.chosen[1:])
            print(f"not identifiable by the data: {keys} built the same network")
