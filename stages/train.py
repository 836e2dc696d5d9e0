"""DVC stage `train`: train one network of the matrix and write its weights.

    python -m effnet.supervise stages/train.py --model efficientnet_b0
        [--params params.yaml] [--data data/cifar100] [--out models/<model>] [--live dvclive/<model>]
        [--checkpoints checkpoints/<model>] [--coefficients metrics/search.json]

Reads `network:` and `train:` from params.yaml. EfficientNets take the searched (alpha,
beta, gamma) from `--coefficients` when `network.efficientnet_scaling` is 'searched'. Each
epoch ends with a checkpoint in `--checkpoints`; rerunning after an interruption resumes
there. Rank 0 logs every epoch to DVCLive in `--live`, writes `--out/model.pt` and then
deletes the checkpoints. Also runs as plain `python stages/train.py` or under torchrun.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effnet import cli
from effnet.config import Params
from effnet.experiment import Logger, model_spec, train_and_save
from effnet.study import model_names


def dvclive(directory: Path) -> Logger:
    from dvclive import Live  # here, not in effnet, which knows nothing of DVC; without it, effnet's PlainLive

    return Live(str(directory), resume=False, dvcyaml=False, save_dvc_exp=False)  # afresh: see open_logger


def run(args: argparse.Namespace, params: Params) -> int:
    spec = model_spec(args.model, params, args.coefficients)
    out = args.out or Path("models") / args.model
    live = args.live or Path("dvclive") / args.model
    checkpoints = args.checkpoints or Path("checkpoints") / args.model

    cli.side_line("effnet.clock", "--model-line", args.model, "--params", str(args.params))  # 'matrix model 5/11: ...'
    train_and_save(
        spec, params.train, data=args.data, out=out, live_dir=live, checkpoints=checkpoints, open_live=dvclive
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--model", required=True, choices=model_names(), metavar="MODEL", help=", ".join(model_names()))
    parser.add_argument("--data", default="data/cifar100", type=Path, help="prepared arrays (download stage)")
    parser.add_argument("--out", type=Path, help="directory of model.pt (default models/<model>)")
    parser.add_argument("--live", type=Path, help="DVCLive directory (default dvclive/<model>)")
    parser.add_argument("--checkpoints", type=Path, help="resumable checkpoints (default checkpoints/<model>)")
    parser.add_argument("--coefficients", default="metrics/search.json", type=Path, help="read by searched B1-B7 only")
    return cli.main(parser, run, argv, lock=lambda args: args.checkpoints or Path("checkpoints") / args.model)


if __name__ == "__main__":
    sys.exit(main())
