"""DVC stages `scale_*`: B0 scaled by one dimension or by the compound rule at matched FLOPs (Figure 3, 8).

    python -m effnet.supervise stages/train_scaling.py --strategy depth --target 4   # or --strategy baseline
        [--out models/scaling/<strategy>_<target>x] [--live dvclive/scaling/<same>] [--data data/cifar100]
        [--params params.yaml]

The spec and its `matched` record: `effnet.scaling.study_spec` (FLOPs within `scaling.tolerance`; a compound
model that does not change every dimension by `scaling.min_change` stops the stage; compound uses the paper's
coefficients, `effnet.study.SCALING_COEFFICIENTS`). The recipe of `train:`, the budget and seeds of `scaling:`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from effnet import cli
from effnet.config import Params
from effnet.experiment import Logger, train_and_save
from effnet.scaling import study_spec
from effnet.study import SCALING_COEFFICIENTS, scaled_name, strategy_names


def dvclive(directory: Path) -> Logger:
    from dvclive import Live  # here, not in effnet, which knows nothing of DVC; without it, effnet's PlainLive

    return Live(str(directory), resume=False, dvcyaml=False, save_dvc_exp=False)  # afresh: see open_logger


def model_name(args: argparse.Namespace) -> str:
    """The model's name, also its checkpoints' directory: that of --out, else baseline or <strategy>_<target>x."""
    if args.out:
        return args.out.name
    return "baseline" if args.strategy == "baseline" else scaled_name(args.strategy, args.target)


def run(args: argparse.Namespace, params: Params) -> int:
    coefficients = SCALING_COEFFICIENTS if args.strategy == "compound" else None
    spec, matched = study_spec(args.strategy, args.target, params, coefficients)
    spec = replace(spec, name=model_name(args))
    cfg = replace(params.train, **{key: getattr(params.scaling, key) for key in ("epochs", "train_per_class", "seeds")})
    out, live = args.out or Path("models/scaling") / spec.name, args.live or Path("dvclive/scaling") / spec.name
    paths = {"data": args.data, "out": out, "live_dir": live, "checkpoints": Path("checkpoints/scaling") / spec.name}
    train_and_save(spec, cfg, **paths, extra={"matched": matched}, open_live=dvclive)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--strategy", required=True, choices=("baseline",) + strategy_names())
    parser.add_argument("--target", type=float, help="multiple of B0's FLOPs (not for baseline)")
    parser.add_argument("--out", type=Path, help="directory of model.pt; its name is the model's")
    parser.add_argument("--live", type=Path, help="DVCLive directory")
    parser.add_argument("--data", default="data/cifar100", type=Path, help="prepared arrays (download stage)")
    return cli.main(parser, run, argv, lock=lambda args: Path("checkpoints/scaling") / model_name(args))


if __name__ == "__main__":
    sys.exit(main())
