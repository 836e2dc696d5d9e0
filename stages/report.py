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
    tables = {key: getattr(args, key) for key in ("models_table", "search_json", "search_table")}
    if args.update_readme:
        pages, changed = fill_readme(args.update_readme, run_params=args.run_params, defaults=args.params, **tables)
        changed_text = ", ".join(map(str, changed)) or "none"
        print(f"filled the generated blocks of {', '.join(map(str, pages))}; changed: {changed_text}")
        return 0
    inputs = {key: getattr(args, key) for key in ("cam_json", "plots_dir", "predictions_dir")}
    text = build_report(params, **tables, **inputs, report_dir=args.out.parent, commit=git_commit(Path.cwd()))
    write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--models-table", default="metrics/models.csv", type=Path, help="the evaluate stage's table")
    parser.add_argument("--search", dest="search_json", default="metrics/search.json", type=Path, help="the search")
    parser.add_argument("--search-table", default="plots/search.csv", type=Path, help="the search stage's candidates")
    parser.add_argument("--cam", dest="cam_json", default="metrics/cam.json", type=Path, help="CAM faithfulness")
    parser.add_argument("--plots", dest="plots_dir", default="plots", type=Path, help="where the figures are")
    parser.add_argument("--predictions", dest="predictions_dir", default="predictions", type=Path, help="per image")
    parser.add_argument("--out", default="REPORT.md", type=Path)
    readme = {"nargs": "?", "const": Path("README.md"), "type": Path, "metavar": "README"}
    parser.add_argument("--update-readme", **readme, help="only fill the generated blocks of README and pages")
    parser.add_argument(
        "--run-params", default="dvc.lock", type=Path, help="with --update-readme: dvc.lock or overrides"
    )
    return cli.main(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
