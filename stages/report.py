"""DVC stage `report`: REPORT.md from the pipeline's outputs; apart from DVC, the README's results block.

    python stages/report.py [--params params.yaml] [--models-table metrics/models.csv]
        [--search metrics/search.json] [--search-table plots/search.csv] [--cam metrics/cam.json]
        [--plots plots] [--predictions predictions] [--out REPORT.md]
    python stages/report.py --update-readme [README.md]     # only the README's results block

The stage writes `--out`: how the run was made, the searched coefficients against the
paper's, the table of models, the paper's ImageNet Table 2 and other CIFAR-100 results beside
ours, the scaling study, the paired comparisons (from `--predictions`), the CAM faithfulness
and the figures. It never touches README.md, which is no DVC output; `--update-readme` (run
by hand after `dvc repro`, then committed) replaces what lies between `<!-- results:start -->`
and `<!-- results:end -->` there with the report's summary table, and writes nothing else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effnet import cli
from effnet.config import Params
from effnet.io import write_text
from effnet.report import README_END, README_START, build_report, git_commit, update_readme


def run(args: argparse.Namespace, params: Params) -> int:
    if args.update_readme:
        if not update_readme(args.update_readme, args.models_table, args.search, report_name=args.out.name,
                             params=params):
            raise ValueError(f"{args.update_readme} has no {README_START} ... {README_END} block to fill")
        print(f"updated the results block of {args.update_readme}")
        return 0
    text = build_report(params, models_table=args.models_table, search_json=args.search, search_table=args.search_table,
                        cam_json=args.cam, plots_dir=args.plots, report_dir=args.out.parent,
                        commit=git_commit(Path.cwd()), predictions_dir=args.predictions)
    write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--models-table", default="metrics/models.csv", type=Path, help="the evaluate stage's table")
    parser.add_argument("--search", default="metrics/search.json", type=Path, help="the search stage's result")
    parser.add_argument("--search-table", default="plots/search.csv", type=Path, help="the search stage's candidates")
    parser.add_argument("--cam", default="metrics/cam.json", type=Path, help="the cam stage's faithfulness")
    parser.add_argument("--plots", default="plots", type=Path, help="where the figures are")
    parser.add_argument("--predictions", default="predictions", type=Path,
                        help="the evaluate stages' per-image predictions")
    parser.add_argument("--out", default="REPORT.md", type=Path)
    parser.add_argument("--update-readme", nargs="?", const=Path("README.md"), type=Path, metavar="README",
                        help="only replace the results block of README (default README.md)")
    return cli.main(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
