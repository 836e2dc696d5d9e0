"""DVC stage `report`: REPORT.md from the pipeline's outputs; apart from DVC, the generated blocks of README and docs/.

    python stages/report.py [--params params.yaml] [--models-table metrics/models.csv]
        [--search metrics/search.json] [--search-table plots/search.csv] [--cam metrics/cam.json]
        [--plots plots] [--predictions predictions] [--out REPORT.md]
    python stages/report.py --update-readme [README.md] [--run-params dvc.lock]   # only the pages' generated blocks

The stage writes `--out` (REPORT.md: how the run was made, the coefficients, the models, the paper's
tables beside ours, the scaling study, the paired comparisons, CAM faithfulness, the figures) and never
README.md. `--update-readme` (by hand after `dvc repro`, then committed) fills the generated blocks of README
and of the pages beside it from the committed run (`effnet.report.fill_readme`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effnet import cli
from effnet.config import Params
from effnet.io import write_text
from effnet.report import build_report, fill_readme, git_commit


def run(args: argparse.Namespace, params: Params) -> int:
    if args.update_readme:
        pages, changed = fill_readme(
            args.update_readme,
            run_params=args.run_params,
            defaults=args.params,
            models_table=args.models_table,
            search_json=args.search,
            search_table=args.search_table,
        )
        print(
            f"filled the generated blocks of {', '.join(map(str, pages))}; "
            f"changed: {', '.join(map(str, changed)) or 'none'}"
        )
        return 0
    text = build_report(
        params,
        models_table=args.models_table,
        search_json=args.search,
        search_table=args.search_table,
        cam_json=args.cam,
        plots_dir=args.plots,
        report_dir=args.out.parent,
        commit=git_commit(Path.cwd()),
        predictions_dir=args.predictions,
    )
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
    parser.add_argument(
        "--predictions", default="predictions", type=Path, help="the evaluate stages' per-image predictions"
    )
    parser.add_argument("--out", default="REPORT.md", type=Path)
    parser.add_argument(
        "--update-readme",
        nargs="?",
        const=Path("README.md"),
        type=Path,
        metavar="README",
        help="only fill the generated blocks of README (default README.md) and the pages beside it",
    )
    parser.add_argument(
        "--run-params",
        default="dvc.lock",
        type=Path,
        help="with --update-readme: what records the committed run's params (a dvc.lock or a params file of overrides)",
    )
    return cli.main(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
