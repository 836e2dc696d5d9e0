"""Print a table of every named model: regime, resolution, parameters and FLOPs.

    python -m effnet.summary                      # CIFAR regime, as params.yaml trains them
    python -m effnet.summary --regime imagenet --num-classes 1000
    python -m effnet.summary --coefficients 1.2 1.1 1.15   # B0-B7 by the compound rule
"""

from __future__ import annotations

import argparse
import warnings

from effnet.models import MODEL_NAMES, describe, spec_for_name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regime", choices=("cifar", "imagenet"), default="cifar")
    parser.add_argument("--cifar-downsample", type=int, choices=(8, 16), default=8)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--coefficients", type=float, nargs=3, metavar=("ALPHA", "BETA", "GAMMA"),
                        help="build B0-B7 by the compound rule with these coefficients instead of the published table")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # fvcore's tracer warnings
    print(f"{'model':<18}{'regime':<10}{'resolution':>11}{'params (M)':>12}{'FLOPs (G)':>11}")
    for name in MODEL_NAMES:
        spec = spec_for_name(name, regime=args.regime, cifar_downsample=args.cifar_downsample,
                             num_classes=args.num_classes,
                             coefficients=tuple(args.coefficients) if args.coefficients else None)
        row = describe(spec)
        print(f"{name:<18}{row['regime']:<10}{row['resolution']:>11}{row['params'] / 1e6:>12.2f}{row['flops'] / 1e9:>11.3f}")


if __name__ == "__main__":
    main()
