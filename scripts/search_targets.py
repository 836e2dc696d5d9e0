"""How many different networks the search grid builds at several FLOPs targets: where the search can decide.

    python scripts/search_targets.py [--targets 2 3 4] [--params params.yaml] [--out metrics/search_targets.json]

For each target every candidate of `search:` is placed at its matched phi (`effnet.search.place`)
and the distinct networks are counted (`effnet.search.distinctness`): distinct architectures,
clusters that differ materially (>= 5% in some built dimension), and the range of built depth,
width and resolution. Prints the table and writes it as JSON for the report
(`effnet.report.search_scope`). FLOPs are counted on the meta device: no data, no training.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from effnet.config import load_params
from effnet.io import write_json
from effnet.models import published_spec
from effnet.search import DISTINCTNESS_COLUMNS, distinctness, grid_candidates, place


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("metrics/search_targets.json"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    b0 = replace(published_spec("b0", params.network), drop_path_rate=params.train.drop_path_rate)
    candidates = grid_candidates(params.search)
    rows = []
    print(" | ".join(DISTINCTNESS_COLUMNS))
    for target in args.targets:
        row = distinctness(place(candidates, b0, target, params.search.flops_tolerance), target)
        rows.append(row)
        print(
            " | ".join(f"{row[k]:g}" if isinstance(row[k], float) else str(row[k]) for k in DISTINCTNESS_COLUMNS),
            flush=True,
        )
    write_json(
        args.out,
        {
            "flops_tolerance": params.search.flops_tolerance,
            "base_resolution": params.network.base_resolution,
            "rows": rows,
        },
    )
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
