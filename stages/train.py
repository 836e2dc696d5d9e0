"""DVC stage `train`: train one network of the matrix and write its weights.

    torchrun --standalone --nproc-per-node=<GPUs, or 1> stages/train.py --model efficientnet_b0
        [--params params.yaml] [--data data/cifar100] [--out models/<model>] [--live dvclive/<model>]
        [--checkpoints checkpoints/<model>] [--coefficients metrics/search.json]

Reads `network:` and `train:` from params.yaml. EfficientNets take the searched (alpha,
beta, gamma) from `--coefficients` when `network.efficientnet_scaling` is 'searched'. Each
epoch ends with a checkpoint in `--checkpoints`; rerunning after an interruption resumes
there. Rank 0 logs every epoch to DVCLive in `--live`, writes `--out/model.pt` and then
deletes the checkpoints. Also runs without torchrun, as one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, for `effnet` and `stages`

from effnet.config import load_params  # noqa: E402
from effnet.distributed import cleanup, init_distributed  # noqa: E402
from effnet.models import MODEL_NAMES  # noqa: E402
from effnet.train import remove_checkpoint, save_weights, train  # noqa: E402
from stages.common import live_callback, model_spec, open_live, run_stage  # noqa: E402


def run(args: argparse.Namespace) -> int:
    if args.model not in MODEL_NAMES:
        raise ValueError(f"unknown model {args.model!r}; allowed: {', '.join(MODEL_NAMES)}")
    params = load_params(args.params)  # a bad key stops here, before anything starts
    cfg = params.train
    spec = model_spec(args.model, params, args.coefficients)
    out = args.out or Path("models") / args.model
    live_dir = args.live or Path("dvclive") / args.model
    checkpoints = args.checkpoints or Path("checkpoints") / args.model

    dist = init_distributed()
    try:
        live = None
        if dist.is_main:
            print(f"{spec.name}: {spec.arch} width {spec.width:g} depth {spec.depth:g} at {spec.resolution}x{spec.resolution}, "
                  f"{cfg.epochs} epochs, batch {cfg.batch_size} over {dist.world_size} process(es) on {dist.device}")
            live = open_live(live_dir, params={"model": spec.to_dict(), "train": dataclasses.asdict(cfg)})
        result = train(spec, cfg, args.data, checkpoint_dir=checkpoints, dist=dist,
                       callback=live_callback(live) if live is not None else None)
        if dist.is_main:
            save_weights(out / "model.pt", result, spec, cfg)
            remove_checkpoint(checkpoints)
            live.end()
            m = result.metrics
            print(f"wrote {out / 'model.pt'}: val top-1 {m['val/top1']:.4f} (EMA {m['val/top1_ema']:.4f}) "
                  f"after {result.train_time_s:.0f} s")
    finally:
        cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help=f"one of {', '.join(MODEL_NAMES)}")
    parser.add_argument("--params", default="params.yaml", type=Path)
    parser.add_argument("--data", default="data/cifar100", type=Path, help="prepared arrays (download stage)")
    parser.add_argument("--out", type=Path, help="directory of model.pt (default models/<model>)")
    parser.add_argument("--live", type=Path, help="DVCLive directory (default dvclive/<model>)")
    parser.add_argument("--checkpoints", type=Path, help="resumable checkpoints (default checkpoints/<model>)")
    parser.add_argument("--coefficients", default="metrics/search.json", type=Path,
                        help="the search result (alpha, beta, gamma); read only for searched EfficientNets")
    args = parser.parse_args(argv)
    return run_stage(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
