"""What the small study leaves out, and what each part would cost here: the clock's estimates, timed on this machine.

    python scripts/small_cuts.py [--overrides scripts/small.yaml] [--out benchmarks/small_cuts.json]

The clock (`effnet.clock`) times B0, B3 (for the cost exponent) and every baseline with this
trainer's own step under the profile, as `python -m effnet.clock --chains` does, then estimates
each chain the profile runs (study.yaml `small_study`) and each one it cuts: B3-B7, the
baselines it does not train, and the search (its stage under the same profile with the searched
coefficients, at params.yaml's grid and budget and at a reduced one: the scaling study's epochs
and seeds). Each estimate is a training stage with its evaluation. It writes them as JSON, which
docs/small.md renders (the `small-cuts` block); the figures are estimates of this machine's
time, not measurements of the cut runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from effnet import clock, study
from effnet.config import Params, load_params
from effnet.io import write_json


def _searched(params: Params, **search: int) -> Params:
    """The profile with the searched coefficients (the search's only consumer) and `search` fields changed."""
    network = dataclasses.replace(params.network, efficientnet_scaling="searched")
    return dataclasses.replace(params, network=network, search=dataclasses.replace(params.search, **search))


def cut_rows(params: Params, seconds: float, exponent: float, baselines: dict[str, float]) -> list[dict]:
    """One row per part of the full study that the profile's chains do not run, with its estimate here."""
    run = {stage for chain in study.small_study_chains(params) for stage in chain.stages}
    rows = []
    for job in clock.budget(params, exponent, baselines):
        stage = clock.dvc_stage(job)
        if job.stage in ("train", "train_baseline") and stage not in run:
            rows.append(
                {
                    "cut": job.name,
                    "stages": [stage],
                    "estimate_s": clock.stages_estimate(params, [stage], seconds, exponent, baselines),
                }
            )
    s = params.search
    reduced = {"epochs": params.scaling.epochs, "seeds": params.scaling.seeds}
    for label, changes in (
        (f"search ({s.epochs} epochs x {s.seeds} seeds a candidate)", {}),
        (f"search, reduced ({reduced['epochs']} epochs x {reduced['seeds']} seeds a candidate)", reduced),
    ):
        searched = _searched(params, **changes)
        rows.append(
            {
                "cut": label,
                "stages": ["search"],
                "candidates": clock.search_candidates(searched),
                "flops_target": s.flops_target,
                "estimate_s": clock.stages_estimate(searched, ["search"], seconds, exponent, baselines),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--overrides", type=Path, default=Path("scripts/small.yaml"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/small_cuts.json"))
    args = parser.parse_args(argv)
    params = load_params(args.params, args.overrides)
    device, torch_device = clock.describe_device()
    seconds = clock.time_b0(params, torch_device)
    exponent = clock.measure_cost_exponent(params, torch_device, seconds)
    baselines = clock.measure_baseline_costs(params, torch_device, seconds)
    chains = [
        {
            "chain": c.name,
            "stages": list(c.stages),
            "estimate_s": clock.stages_estimate(params, [c.stages[0]], seconds, exponent, baselines),
        }
        for c in study.small_study_chains(params)
    ]
    record = {
        "what": f"the clock's estimates on {device}, profile {args.overrides}",
        "device": device,
        "b0_images_per_s": 1 / seconds,
        "cost_exponent": exponent,
        "chains": chains,
        "cuts": cut_rows(params, seconds, exponent, baselines),
    }
    write_json(args.out, record)
    for row in chains + record["cuts"]:
        print(f"{row.get('chain', row.get('cut')):<55} {clock.duration(row['estimate_s']):>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
