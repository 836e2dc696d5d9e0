"""DVC stages `cam_maps_b0` and `cam_maps@<strategy>-<target>`: one scaling-study model's Grad-CAM maps.

    python stages/cam_maps.py --model scaling/depth_4x [--params params.yaml] [--data data/cifar100]
        [--models models] [--out cams]

Draws the maps of `cam.methods` on the figure's seeded test images and scores the faithfulness
of each method (and of a random map) on `cam.faithfulness_images` seeded test images, from the
model's trained (EMA) weights `--models/<model>/model.pt`, into `--out/<model>.npz` (a few KB,
committed). Runs in the model's own chain, after its evaluation, so that the `cam` stage needs
no weights. Runs on the first CUDA device when there is one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from effnet import cli
from effnet.cam import cam_images, draw_model_maps, save_model_maps, scaling_model
from effnet.config import Params
from effnet.evaluate import trained_model


def run(args: argparse.Namespace, params: Params) -> int:
    trained = trained_model(args.models, args.model)
    model = scaling_model(trained.path, args.model)
    if model is None:
        raise ValueError(
            f"{args.model} is no model of the scaling study (scaling/baseline, scaling/<strategy>_<target>x)"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    maps = draw_model_maps(model, cam_images(args.data, params.cam, device), params.cam, device=device)
    save_model_maps(args.out / f"{args.model}.npz", maps)
    print(
        f"wrote {args.out / args.model}.npz: "
        + ", ".join(f"{method} ROAD combined {maps.entry[method]['road_combined']:+.4f}" for method in maps.maps)
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument(
        "--model", required=True, help="its directory below --models: scaling/baseline, scaling/depth_4x"
    )
    parser.add_argument("--data", default="data/cifar100", type=Path, help="prepared arrays (download stage)")
    parser.add_argument("--models", default="models", type=Path, help="where the model's directory is")
    parser.add_argument("--out", default="cams", type=Path, help="where <model>.npz goes")
    return cli.main(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
