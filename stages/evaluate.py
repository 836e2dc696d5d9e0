"""DVC stages `evaluate@<model>`: accuracy (val and test; raw, EMA, flip) and cost of one trained model.

    python stages/evaluate.py --model efficientnet_b0 [--params params.yaml] [--data data/cifar100]
        [--models models] [--metrics metrics/models] [--predictions predictions]

Evaluates `--models/<model>/model.pt` (and, with `train.seeds` > 1, its other seeds,
`<model>/seed<k>/model.pt`) on the full val and test splits and writes the model's two small
files: `--metrics/<model>.json` (e.g. metrics/models/scaling/depth_2x.json; accuracies are
fractions) and its predicted class of every test image, `--predictions/<model>.npz`. One
model per run, so each model's chain (train, then evaluate) runs on its own machine; the
`collect` stage builds metrics/models.csv from the JSON files. Runs on the first CUDA
device when there is one. The first stage that reads the test split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from effnet import cli
from effnet.config import Params
from effnet.evaluate import evaluate_one, trained_model


def run(args: argparse.Namespace, params: Params) -> int:
    trained = trained_model(args.models, args.model)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    evaluate_one(
        trained, args.data, params.evaluate, metrics_dir=args.metrics, predictions_dir=args.predictions, device=device
    )
    print(f"wrote {args.metrics / args.model}.json and {args.predictions / args.model}.npz")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument(
        "--model", required=True, help="its directory below --models: efficientnet_b0, scaling/depth_2x"
    )
    parser.add_argument("--data", default="data/cifar100", type=Path, help="prepared arrays (download stage)")
    parser.add_argument("--models", default="models", type=Path, help="where the model's directory is")
    parser.add_argument("--metrics", default="metrics/models", type=Path, help="one JSON per model")
    parser.add_argument("--predictions", default="predictions", type=Path, help="one .npz per model")
    return cli.main(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
