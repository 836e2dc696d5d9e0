"""DVC stage `report`: REPORT.md from the pipeline's outputs; apart from DVC, the generated blocks of README and docs/.

    python stages/report.py [--params params.yaml] [--models-table metrics/models.csv]
        [--search metrics/search.json] [--search-table plots/search.csv] [--cam metrics/cam.json]
        [--plots plots] [--predictions predictions] [--out REPORT.md]
    python stages/report.py --update-readme [README.md] [--run-params dvc.lock]   # only the pages' generated blocks

The stage writes `--out`: how the run was made, the searched coefficients against the
paper's, the table of models, the paper's ImageNet Table 2 and other CIFAR-100 results beside
ours, the scaling study, the paired comparisons (from `--predictions`), the CAM faithfulness
and the figures. It never touches README.md, which is no DVC output. `--update-readme` (run
by hand after `dvc repro`, then committed) fills every generated block, what lies between
`<!-- NAME:start -->` and `<!-- NAME:end -->`, of README and of the pages beside it (docs/*.md,
benchmarks/README.md, vendor/*/README.md) from the committed run: the tables, `--search-table`,
and the params `--run-params` records for it (dvc.lock, or an archive's params-gpu.yaml) over
`--params`; it writes nothing else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, for `effnet` and `stages`

from effnet.config import Params  # noqa: E402
from effnet.io import write_text  # noqa: E402
from effnet.report import (README_END, README_START, build_report, generated_pages, git_commit,  # noqa: E402
                           read_run_files, update_pages)
from stages import cli  # noqa: E402


def run(args: argparse.Namespace, params: Params) -> int:
    if args.update_readme:
        readme = args.update_readme
        if not readme.is_file():
            raise FileNotFoundError(f"{readme}: no such file; run from the project root or name the README")
        if README_START not in readme.read_text():
            raise ValueError(f"{readme} has no {README_START} ... {README_END} block to fill")
        if args.run_params != Path("dvc.lock") and not args.run_params.is_file():
            raise FileNotFoundError(f"--run-params {args.run_params}: no such file")
        files = read_run_files(readme.parent, run=args.run_params, defaults=args.params, models_table=args.models_table,
                               search_json=args.search, search_table=args.search_table)
        pages = [readme] + [p for p in generated_pages(readme.parent) if p.resolve() != readme.resolve()]
        changed = update_pages(pages, files)
        print(f"filled the generated blocks of {', '.join(str(p) for p in pages)}; changed: "
              f"{', '.join(str(p) for p in changed) or 'none'}")
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
    parser.add_argument("--predictions", default="predictions", type=Path, help="the evaluate stages' per-image predictions")
    parser.add_argument("--out", default="REPORT.md", type=Path)
    parser.add_argument("--update-readme", nargs="?", const=Path("README.md"), type=Path, metavar="README",
                        help="only fill the generated blocks of README (default README.md) and the pages beside it")
    parser.add_argument("--run-params", default="dvc.lock", type=Path,
                        help="with --update-readme: what records the committed run's params (a dvc.lock or a params "
                             "file of overrides)")
    return cli.main(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
