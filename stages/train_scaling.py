"""DVC stages `scale_*`: B0 scaled by one dimension or by the compound rule at matched FLOPs (Figure 3, 8).

    python stages/launch.py stages/train_scaling.py --strategy depth --target 4
    python stages/launch.py stages/train_scaling.py --strategy baseline      # B0 itself, with the same budget
        [--out models/scaling/<strategy>_<target>x] [--live dvclive/scaling/<same>]
        [--params params.yaml] [--data data/cifar100]

The model's spec and its `matched` record come from `effnet.scaling.study_spec` (FLOPs
matched within `scaling.tolerance`, one regularisation per target; a compound model that does
not change every dimension by `scaling.min_change` stops the stage); compound scaling uses
`effnet.study.SCALING_COEFFICIENTS`, the paper's, whatever the search found. Trained with the recipe of `train:` and the
budget of `scaling:`; writes `--out`/model.pt (default models/scaling/<strategy>_<target>x,
or models/scaling/baseline), the model named after that directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, for `effnet` and `stages`

from effnet.config import Params  # noqa: E402
from effnet.scaling import study_spec  # noqa: E402
from effnet.study import SCALING_COEFFICIENTS, scaled_name, strategy_names  # noqa: E402
from stages import cli  # noqa: E402
from stages.common import train_and_save  # noqa: E402


def model_name(args: argparse.Namespace) -> str:
    """The model's name: that of --out, else baseline or <strategy>_<target>x; also its checkpoints' directory."""
    return args.out.name if args.out else ("baseline" if args.strategy == "baseline" else scaled_name(args.strategy, args.target))


def run(args: argparse.Namespace, params: Params) -> int:
    coefficients = SCALING_COEFFICIENTS if args.strategy == "compound" else None
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
    return cli.main(parser, run, argv, lock=lambda args: Path("checkpoints/scaling") / model_name(args))


if __name__ == "__main__":
    sys.exit(main())
