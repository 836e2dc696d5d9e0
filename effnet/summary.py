"""Print a table of every named model: regime, resolution, parameters and FLOPs.

python -m effnet.summary                      # CIFAR regime, as params.yaml trains them
python -m effnet.summary --regime imagenet --num-classes 1000
python -m effnet.summary --coefficients 1.2 1.1 1.15   # B0-B7 by the compound rule
"""

from __future__ import annotations

import argparse
import math

from effnet.config import NetworkConfig
from effnet.models import describe, spec_for_name
from effnet.study import model_names

# Beyond these, B7 (phi = 7) no longer fits in memory to be counted: a coefficient of 1.5 is
# already 1.5^7 = 17x B0's depth. The paper's are (1.2, 1.1, 1.15).
MAX_COEFFICIENT = 2.0


def _coefficient(text: str) -> float:
    """An argparse type: a compound-rule coefficient, in [1, MAX_COEFFICIENT]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 1.0 <= value <= MAX_COEFFICIENT):
        raise argparse.ArgumentTypeError(
            f"each coefficient must lie in [1, {MAX_COEFFICIENT:g}] (below 1 a dimension "
            f"would shrink with phi), got {text}"
        )
    return value


def _num_classes(text: str) -> int:
    """An argparse type: the number of classes, an integer >= 2."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2 (a classifier needs two classes), got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regime", choices=("cifar", "imagenet"), default="cifar")
    parser.add_argument("--cifar-downsample", type=int, choices=(8, 16), default=8)
    parser.add_argument("--num-classes", type=_num_classes, default=100, help="an integer >= 2")
    parser.add_argument(
        "--coefficients",
        type=_coefficient,
        nargs=3,
        metavar=("ALPHA", "BETA", "GAMMA"),
        help="build B0-B7 by the compound rule with these coefficients (each in "
        f"[1, {MAX_COEFFICIENT:g}]) instead of the published table",
    )
    args = parser.parse_args(argv)  # a bad value: usage, one error line, exit status 2
    # each row as soon as it is counted (B7 takes a while): flushed even through a pipe
    print(f"{'model':<18}{'regime':<10}{'resolution':>11}{'params (M)':>12}{'FLOPs (G)':>11}", flush=True)
    for name in model_names():
        net = NetworkConfig(regime=args.regime, cifar_downsample=args.cifar_downsample, num_classes=args.num_classes)
        spec = spec_for_name(name, net, tuple(args.coefficients) if args.coefficients else None)
        row = describe(spec)
        print(
            f"{name:<18}{row['regime']:<10}{row['resolution']:>11}{row['params'] / 1e6:>12.2f}"
            f"{row['flops'] / 1e9:>11.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
