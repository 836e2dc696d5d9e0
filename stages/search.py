"""DVC stage `search`: the grid search for (alpha, beta, gamma) at equal real cost (paper Section 3.3, step 1).

    python -m effnet.supervise stages/search.py
        [--params params.yaml] [--data data/cifar100] [--out metrics/search.json] [--table plots/search.csv]
        [--scratch checkpoints/search]

Every candidate of the grid is placed at the phi where its real network costs
`search.flops_target` x B0's FLOPs (within `search.flops_tolerance`, else it is reported as
infeasible and not trained); candidates that then build the same network are trained once,
with `search.seeds` seeds. Each network trains with the short budget of `search:`, the recipe
of `train:` and the regularisation of the target (`effnet.scaling.target_dropout`,
`train.drop_path_rate`), and is scored on the validation split (the test split is never
read). Each finished network and seed is written to `--scratch` at once, so an interrupted
search resumes where it stopped; once the outputs are written the scratch directory is
deleted, so `dvc repro -f search` retrains. Writes the decision (`--out`: the coefficients
taken, searched or the paper's by `effnet.search.DECISION_RULE`, and why) and the table of
all candidates with their intervals (`--table`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effnet import cli
from effnet.config import Params
from effnet.search_run import search_stage


def run(args: argparse.Namespace, params: Params) -> int:
    search_stage(params, data=args.data, out=args.out, table=args.table, scratch=args.scratch, code=[Path(__file__)])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--data", default="data/cifar100", type=Path, help="prepared arrays (download stage)")
    parser.add_argument(
        "--out", default="metrics/search.json", type=Path, help="the decision: coefficients taken and why"
    )
    parser.add_argument("--table", default="plots/search.csv", type=Path, help="every candidate")
    parser.add_argument(
        "--scratch",
        default="checkpoints/search",
        type=Path,
        help="finished networks and checkpoints (deleted once the outputs are written)",
    )
    return cli.main(parser, run, argv, lock=lambda args: args.scratch)


if __name__ == "__main__":
    sys.exit(main())
