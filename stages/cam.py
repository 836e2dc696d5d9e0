"""DVC stage `cam`: Grad-CAM maps of the scaling study (paper Figure 7) and their faithfulness.

    python stages/cam.py [--params params.yaml] [--data data/cifar100] [--maps cams]
        [--figures plots/cam] [--metrics metrics/cam.json] [--table plots/cam_faithfulness.csv]

Assembles what the `cam_maps` stages drew, one small file per model of the scaling study
(`--maps/scaling/<model>.npz`), without any weights: for every model and every method of
`cam.methods` (plus a random map as the floor), the faithfulness of its maps on
`cam.faithfulness_images` seeded test images goes to `--metrics` (per model, per method) and
`--table`; the figure of B0 against the models at `cam.flops_target` x its FLOPs goes to
`--figures/<method>.png`, one per method, a model without maps drawn as missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effnet import cli
from effnet.cam import run_cam
from effnet.config import Params
from effnet.study import study_models


def run(args: argparse.Namespace, params: Params) -> int:
    metrics = run_cam(
        args.maps,
        args.data,
        params.cam,
        cam_dir=args.figures,
        metrics_path=args.metrics,
        table_path=args.table,
        run=[m.name for m in study_models(params)],
    )
    if not metrics:
        print(f"note: no maps of the scaling study below {args.maps}/scaling: empty figures, a table without rows")
    print(f"wrote {args.figures}/<method>.png for {', '.join(params.cam.methods)}, {args.metrics} and {args.table}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--data", default="data/cifar100", type=Path, help="prepared arrays (download stage)")
    parser.add_argument("--maps", default="cams", type=Path, help="the cam_maps stages' files: <maps>/scaling/*.npz")
    parser.add_argument("--figures", default="plots/cam", type=Path, help="directory of <method>.png")
    parser.add_argument("--metrics", default="metrics/cam.json", type=Path)
    parser.add_argument("--table", default="plots/cam_faithfulness.csv", type=Path)
    return cli.main(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
