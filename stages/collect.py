"""DVC stage `collect`: metrics/models.csv from the small per-model records alone (no weights, no torch).

    python stages/collect.py [--params params.yaml] [--metrics metrics/models] [--table metrics/models.csv]

Reads every `--metrics/**/<model>.json` that the `evaluate@<model>` stages wrote (on this
machine or, committed, on others) and writes the table of the models of this run: the
matrix, the phi model and the scaling study at `scaling.flops_targets`; records of models
that no stage declares any more are left out, with a note.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effnet import cli
from effnet.config import Params
from effnet.results import collect
from effnet.study import study_models


def run(args: argparse.Namespace, params: Params) -> int:
    rows = collect(args.metrics, args.table, [m.name for m in study_models(params)])
    print(f"wrote {args.table} ({len(rows)} models)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--metrics", default="metrics/models", type=Path, help="the evaluate stages' records")
    parser.add_argument("--table", default="metrics/models.csv", type=Path)
    return cli.main(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
