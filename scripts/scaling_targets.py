"""Where the four scaling strategies can be compared at equal real cost, for a profile's B0.

    python scripts/scaling_targets.py [--overrides scripts/small.yaml] [--targets 2 2.5 3 3.5 4 5]
                                      [--out metrics/scaling_targets_small.json]

For each strategy (`effnet.scaling.reachable`) every distinct network it builds up to the
largest target is counted on the meta device (no data, no training); a target is usable
when every strategy's nearest network lies within `scaling.tolerance` of it
(`equal_cost_targets`) and the compound model (the paper's coefficients) grows depth, width
and resolution each by `scaling.min_change` as built (`changes_every_dimension`). Prints
one line per target and writes them as JSON, which the profile's header cites.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from effnet.config import load_params
from effnet.io import write_json
from effnet.models import published_spec
from effnet.scaling import SCALINGS, built_multipliers, changes_every_dimension, match_flops, reachable
from effnet.study import SCALING_COEFFICIENTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--overrides", type=Path, help="a profile of dotted overrides (scripts/small.yaml)")
    parser.add_argument("--targets", type=float, nargs="+", default=[2.0, 2.5, 3.0, 3.5, 4.0, 5.0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params, args.overrides)
    b0 = replace(published_spec("b0", params.network), drop_path_rate=params.train.drop_path_rate)
    tolerance, minimum = params.scaling.tolerance, params.scaling.min_change
    ratios = {s: [r for _, r in reachable(s, b0, max(args.targets), SCALING_COEFFICIENTS)] for s in SCALINGS}
    rows = []
    for target in args.targets:
        nearest = {s: min(r, key=lambda v: abs(v / target - 1.0)) for s, r in ratios.items()}
        compound = match_flops("compound", target, b0, SCALING_COEFFICIENTS).spec
        built = built_multipliers(compound, b0)
        row = {
            "target": target,
            "nearest": nearest,
            "compound_built": built,
            "equal_cost": all(abs(v / target - 1.0) <= tolerance for v in nearest.values()),
            "compound_changes_all": changes_every_dimension(compound, b0, 1.0 + minimum),
        }
        row["usable"] = row["equal_cost"] and row["compound_changes_all"]
        rows.append(row)
        print(
            f"{target:g}x: "
            + ", ".join(f"{s} {v:.3f}x" for s, v in nearest.items())
            + f"; compound builds depth {built['depth']:.2f}x width {built['width']:.2f}x resolution "
            f"{built['resolution']:.2f}x; {'usable' if row['usable'] else 'not usable'}",
            flush=True,
        )
    if args.out:
        write_json(
            args.out,
            {
                "base_resolution": b0.resolution,
                "tolerance": tolerance,
                "min_change": minimum,
                "overrides": str(args.overrides) if args.overrides else None,
                "rows": rows,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
