"""DVC stage `evaluate`: accuracy (val and test; raw, EMA, flip) and cost of every trained model.

    python stages/evaluate.py [--params params.yaml] [--data data/cifar100] [--models models]
        [--metrics metrics/models] [--table metrics/models.csv]

Finds the `model.pt` of every model that dvc.yaml trains for the current params (the
matrix, the phi model, the scaling study at `scaling.flops_targets`) below `--models` and writes one flat JSON per model,
`--metrics/<model>.json` (e.g. metrics/models/scaling/depth_2x.json), and the table of all of
them, `--table`. Accuracies are fractions. Runs on the first CUDA device when there is one.
The first stage that reads the test split.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, for `effnet` and `stages`

import torch  # noqa: E402

from effnet.config import Params  # noqa: E402
from effnet.evaluate import evaluate_all, pipeline_models  # noqa: E402
from stages import cli  # noqa: E402


def run(args: argparse.Namespace, params: Params) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    warnings.filterwarnings("ignore", module="fvcore")  # its tracer's notes on unsupported ops
    rows = evaluate_all(args.models, args.data, params.evaluate, metrics_dir=args.metrics, table=args.table,
                        device=device, only=pipeline_models(params.scaling.flops_targets))
    print(f"wrote {args.metrics}/ ({len(rows)} models) and {args.table}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--data", default="data/cifar100", type=Path, help="prepared arrays (download stage)")
    parser.add_argument("--models", default="models", type=Path, help="searched for **/model.pt")
    parser.add_argument("--metrics", default="metrics/models", type=Path, help="one JSON per model")
    parser.add_argument("--table", default="metrics/models.csv", type=Path)
    return cli.main(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
