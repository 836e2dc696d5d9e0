"""DVC stages `scale_*`: B0 scaled by one dimension or by the compound rule at matched FLOPs (Figure 3, 8).

    python stages/launch.py stages/train_scaling.py --strategy depth --target 4
    python stages/launch.py stages/train_scaling.py --strategy baseline      # B0 itself, with the same budget
        [--out models/scaling/<strategy>_<target>x] [--live dvclive/scaling/<same>]
        [--params params.yaml] [--data data/cifar100] [--coefficients metrics/search.json]

The model's spec and its `matched` record come from `effnet.scaling.study_spec` (FLOPs
matched within `scaling.tolerance`, one regularisation per target); compound scaling uses
`effnet.study.compound_coefficients` (searched, or the paper's under
`network.efficientnet_scaling: published`). Trained with the recipe of `train:` and the
budget of `scaling:`; writes `--out`/model.pt (default models/scaling/<strategy>_<target>x,
or models/scaling/baseline), the model named after that directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


from effnet.config import Params
from effnet.scaling import study_spec
from effnet.study import compound_coefficients, scaled_name, strategy_names
from effnet import cli
from effnet.experiment import train_and_save


def model_name(args: argparse.Namespace) -> str:
    """The model's name: that of --out, else baseline or <strategy>_<target>x; also its checkpoints' directory."""
    return args.out.name if args.out else ("baseline" if args.strategy == "baseline" else scaled_name(args.strategy, args.target))


def run(args: argparse.Namespace, params: Params) -> int:
    coefficients = compound_coefficients(params.network, args.coefficients) if args.strategy == "compound" else None
    spec, matched = study_spec(args.strategy, args.target, params, coefficients)
    spec = dataclasses.replace(spec, name=model_name(args))
    cfg = dataclasses.replace(params.train, epochs=params.scaling.epochs, train_per_class=params.scaling.train_per_class)
    train_and_save(spec, cfg, data=args.data, out=args.out or Path("models/scaling") / spec.name,
                   live_dir=args.live or Path("dvclive/scaling") / spec.name, checkpoints=Path("checkpoints/scaling") / spec.name,
                   extra={"matched": matched})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--strategy", required=True, choices=("baseline",) + strategy_names())
    parser.add_argument("--target", type=float, help="multiple of B0's FLOPs (not for baseline)")
    parser.add_argument("--out", type=Path, help="directory of model.pt; its name is the model's")
    parser.add_argument("--live", type=Path, help="DVCLive directory")
    parser.add_argument("--data", default="data/cifar100", type=Path, help="prepared arrays (download stage)")
    parser.add_argument("--coefficients", default="metrics/search.json", type=Path, help="the search result (compound only)")
    return cli.main(parser, run, argv, lock=lambda args: Path("checkpoints/scaling") / model_name(args))


if __name__ == "__main__":
    sys.exit(main())
