"""DVC stage `train_phi`: one EfficientNet compound-scaled at any real phi (`dvc exp run -S model.phi=4`).

    python -m effnet.supervise stages/train_phi.py
        [--params params.yaml] [--data data/cifar100] [--out models/efficientnet_phi]
        [--live dvclive/efficientnet_phi] [--checkpoints checkpoints/efficientnet_phi]
        [--coefficients metrics/search.json]

B0 scaled by depth alpha^phi, width beta^phi and resolution gamma^phi (Eq. 3) with the searched coefficients, or
the paper's (1.2, 1.1, 1.15) when `network.efficientnet_scaling` is 'published'; dropout follows the published
B0-B7 rates interpolated in phi. Trained with the recipe and budget of `train:`. Only this stage reads `model:`,
so changing `model.phi` retrains this one network and nothing else of the matrix.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from effnet import cli
from effnet.config import Params
from effnet.experiment import Logger, train_and_save
from effnet.models import compound_spec
from effnet.study import compound_coefficients


def dvclive(directory: Path) -> Logger:
    from dvclive import Live  # here, not in effnet, which knows nothing of DVC; without it, effnet's PlainLive

    return Live(str(directory), resume=False, dvcyaml=False, save_dvc_exp=False)  # afresh: see open_logger


def run(args: argparse.Namespace, params: Params) -> int:
    coefficients = compound_coefficients(params.network, args.coefficients)
    spec = compound_spec(params.model.phi, coefficients, params.network)
    spec = dataclasses.replace(spec, drop_path_rate=params.train.drop_path_rate)
    searched = params.network.efficientnet_scaling == "searched"
    print(
        f"phi = {params.model.phi:g} with {'searched' if searched else 'the paper'}'s (alpha, beta, gamma) = "
        f"({coefficients[0]:g}, {coefficients[1]:g}, {coefficients[2]:g})"
    )
    extra = {"phi": params.model.phi, "coefficients": list(coefficients)}
    paths = {"data": args.data, "out": args.out, "live_dir": args.live, "checkpoints": args.checkpoints}
    train_and_save(spec, params.train, **paths, extra=extra, open_live=dvclive)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--data", default="data/cifar100", type=Path, help="prepared arrays (download stage)")
    parser.add_argument("--out", default="models/efficientnet_phi", type=Path, help="directory of model.pt")
    parser.add_argument("--live", default="dvclive/efficientnet_phi", type=Path, help="DVCLive directory")
    parser.add_argument("--checkpoints", default="checkpoints/efficientnet_phi", type=Path, help="checkpoints")
    parser.add_argument("--coefficients", default="metrics/search.json", type=Path, help="the search result")
    return cli.main(parser, run, argv, lock=lambda args: args.checkpoints)


if __name__ == "__main__":
    sys.exit(main())
