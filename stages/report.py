"""DVC stage `report`: REPORT.md from the pipeline's outputs, and the README's results block.

    python stages/report.py [--params params.yaml] [--models-table metrics/models.csv]
        [--search metrics/search.json] [--search-table plots/search.csv] [--cam metrics/cam.json]
        [--plots plots] [--predictions predictions] [--out REPORT.md] [--readme README.md]

Writes `--out`: how the run was made, the searched coefficients against the paper's, the
table of models, the paper's ImageNet Table 2 and other CIFAR-100 results beside ours, the
scaling study, the paired comparisons (from `--predictions`), the CAM faithfulness and the figures. Then, if `--readme` has the markers
`<!-- results:start -->` and `<!-- results:end -->`, replaces what lies between them with
the report's summary table (the README is edited in place, not a DVC output).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, for `effnet` and `stages`

from effnet.config import load_params  # noqa: E402
from effnet.io import write_text  # noqa: E402
from effnet.report import build_report, git_commit, update_readme  # noqa: E402
from stages.common import run_stage  # noqa: E402


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params)  # a bad key stops here, before anything starts
    text = build_report(params, models_table=args.models_table, search_json=args.search, search_table=args.search_table,
                        cam_json=args.cam, plots_dir=args.plots, report_dir=args.out.parent,
                        commit=git_commit(Path.cwd()), predictions_dir=args.predictions)
    write_text(args.out, text)
    print(f"wrote {args.out}")
    if update_readme(args.readme, args.models_table, args.search, report_name=args.out.name, params=params):
        print(f"updated the results block of {args.readme}")
    else:
        print(f"note: {args.readme} has no {'<!-- results:start -->'} ... {'<!-- results:end -->'} block; left as it is")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", type=Path)
    parser.add_argument("--models-table", default="metrics/models.csv", type=Path, help="the evaluate stage's table")
    parser.add_argument("--search", default="metrics/search.json", type=Path, help="the search stage's result")
    parser.add_argument("--search-table", default="plots/search.csv", type=Path, help="the search stage's candidates")
    parser.add_argument("--cam", default="metrics/cam.json", type=Path, help="the cam stage's faithfulness")
    parser.add_argument("--plots", default="plots", type=Path, help="where the figures are")
    parser.add_argument("--predictions", default="predictions", type=Path, help="the evaluate stages' per-image predictions")
    parser.add_argument("--out", default="REPORT.md", type=Path)
    parser.add_argument("--readme", default="README.md", type=Path)
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
