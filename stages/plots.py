"""DVC stage `plots`: the paper's figures on CIFAR-100 as CSV data plots and PNGs.

    python stages/plots.py [--params params.yaml] [--models-table metrics/models.csv]
        [--search-table plots/search.csv] [--cam-table plots/cam_faithfulness.csv]
        [--dvclive dvclive] [--predictions predictions] [--out plots] [--summary metrics/summary.json]

Writes to `--out`: accuracy_vs_params.csv/.png and accuracy_vs_flops.csv/.png (Figure 1, with each
model's 95% interval of test top-1 from its per-image predictions in `--predictions`),
val_vs_test.csv/.png, scaling.csv/.png (Figures 3 and 8), search.png, training_curves.png
and cam_faithfulness.png; and `--summary`, the test top-1 of each model of the matrix
and the phi model as one flat metrics file. A missing input gives a note, a header-only CSV and a placeholder
PNG, never a failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effnet import cli
from effnet.config import Params
from effnet.plots import make_plots


def run(args: argparse.Namespace, params: Params) -> int:  # no key is read, but a bad params.yaml stops the stage
    paths = ("models_table", "search_table", "cam_table", "dvclive_dir", "out_dir", "summary", "predictions_dir")
    written = make_plots(**{key: getattr(args, key) for key in paths})
    print(f"wrote {', '.join(str(p) for p in written.values())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--models-table", default="metrics/models.csv", type=Path, help="the evaluate stage's table")
    parser.add_argument("--search-table", default="plots/search.csv", type=Path, help="the search stage's table")
    parser.add_argument("--cam-table", default="plots/cam_faithfulness.csv", type=Path, help="the cam stage's table")
    parser.add_argument("--dvclive", dest="dvclive_dir", default="dvclive", type=Path, help="the runs' DVCLive logs")
    parser.add_argument("--predictions", dest="predictions_dir", default="predictions", type=Path, help="per image")
    parser.add_argument("--out", dest="out_dir", default="plots", type=Path)
    parser.add_argument("--summary", default="metrics/summary.json", type=Path, help="test top-1 for dvc metrics show")
    return cli.main(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
