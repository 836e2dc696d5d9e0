"""DVC stages `scale_*`: B0 scaled by one dimension or by the compound rule at matched FLOPs (Figure 3, 8).

    python stages/launch.py stages/train_scaling.py --strategy depth --target 4
    python stages/launch.py stages/train_scaling.py --strategy baseline      # B0 itself, with the same budget
        [--out models/scaling/<strategy>_<target>x] [--live dvclive/scaling/<same>]
        [--params params.yaml] [--data data/cifar100] [--coefficients metrics/search.json]

The strategy's multiplier (depth, width, resolution or phi) is solved so that the network's
measured FLOPs (`effnet.models.count_flops`) lie within `scaling.tolerance` of `--target` x
B0's; every model of the study, B0 included, trains with the recipe of `train:` and the
budget of `scaling:`, and every model at one target with the same regularisation: dropout
`effnet.scaling.target_dropout(target)` and stochastic depth `train.drop_path_rate`. The
saved record `matched` holds the FLOPs and the depth, width and resolution multipliers as
built (after rounding), beside the dropout and drop-path rate.
Writes `--out`/model.pt (by default models/scaling/<strategy>_<target>x, or
models/scaling/baseline for B0); the model is named after that directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, for `effnet` and `stages`

from effnet.config import Params  # noqa: E402
from effnet.models import count_flops, spec_for_name  # noqa: E402
from effnet.scaling import STRATEGIES, built_multipliers, match_flops, scaled_name, target_dropout  # noqa: E402
from stages import cli  # noqa: E402
from stages.common import read_coefficients, train_and_save  # noqa: E402


def model_name(args: argparse.Namespace) -> str:
    """The model's name: that of --out, else baseline or <strategy>_<target>x; also its checkpoints' directory."""
    return args.out.name if args.out else ("baseline" if args.strategy == "baseline" else scaled_name(args.strategy, args.target))


def run(args: argparse.Namespace, params: Params) -> int:
    net, study = params.network, params.scaling
    cfg = dataclasses.replace(params.train, epochs=study.epochs, train_per_class=study.train_per_class)
    b0 = spec_for_name("efficientnet_b0", regime=net.regime, cifar_downsample=net.cifar_downsample,
                       num_classes=net.num_classes, base_resolution=net.base_resolution)
    # one regularisation per FLOPs target (effnet.scaling.target_dropout): B0's is that of 1x
    b0 = dataclasses.replace(b0, dropout=target_dropout(1.0), drop_path_rate=cfg.drop_path_rate)
    if args.strategy == "baseline":
        spec, extra = b0, {"strategy": "baseline", "target": 1.0, "flops_ratio": 1.0, "flops": count_flops(b0),
                           "depth": 1.0, "width": 1.0, "resolution": 1.0}
    else:
        if args.target is None:
            raise ValueError(f"--strategy {args.strategy} needs --target, a multiple of B0's FLOPs (scaling.flops_targets)")
        coefficients = read_coefficients(args.coefficients) if args.strategy == "compound" else None
        matched = match_flops(args.strategy, args.target, b0, coefficients)
        if abs(matched.relative_error) > study.tolerance:
            raise ValueError(f"{args.strategy} scaling gets no nearer than {matched.flops / (matched.target_flops / args.target):.2f}x "
                             f"B0's FLOPs to the target {args.target:g}x (scaling.tolerance {study.tolerance:g}); "
                             "raise scaling.tolerance or choose another target")
        spec = matched.spec
        built = built_multipliers(spec, b0)  # as built, after rounding: what the network really changed
        extra = {"strategy": args.strategy, "target": args.target, "multiplier": matched.multiplier,
                 "flops_ratio": args.target * (1 + matched.relative_error), "flops": matched.flops, **built}
        print(f"{spec.name}: {args.strategy} multiplier {matched.multiplier:.4g} gives {extra['flops_ratio']:.3f}x B0's FLOPs; "
              f"built depth {built['depth']:.3f}x, width {built['width']:.3f}x, resolution {built['resolution']:.3f}x")
    extra.update(dropout=spec.dropout, drop_path_rate=spec.drop_path_rate)
    name = model_name(args)
    spec = dataclasses.replace(spec, name=name)
    train_and_save(spec, cfg, data=args.data, out=args.out or Path("models/scaling") / name,
                   live_dir=args.live or Path("dvclive/scaling") / name, checkpoints=Path("checkpoints/scaling") / name,
                   extra={"matched": extra})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--strategy", required=True, choices=("baseline",) + STRATEGIES)
    parser.add_argument("--target", type=float, help="multiple of B0's FLOPs (not for baseline)")
    parser.add_argument("--out", type=Path, help="directory of model.pt; its name is the model's")
    parser.add_argument("--live", type=Path, help="DVCLive directory")
    parser.add_argument("--data", default="data/cifar100", type=Path, help="prepared arrays (download stage)")
    parser.add_argument("--coefficients", default="metrics/search.json", type=Path, help="the search result (compound only)")
    return cli.main(parser, run, argv, lock=lambda args: Path("checkpoints/scaling") / model_name(args))


if __name__ == "__main__":
    sys.exit(main())
