"""DVC stage `download`: fetch CIFAR-100, verify it, and write the train/val/test arrays.

    python stages/download.py [--params params.yaml] [--out data/cifar100] [--cache data/raw]

Reads `data:` from params.yaml. The archive is fetched once into the cache directory
(`data/raw/cifar-100-python.tar.gz`, not a DVC output, so that DVC's removal of outputs
before a rerun does not cost another download); the stage's output is the prepared
directory `--out`, replaced atomically and only when complete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effnet import cli
from effnet.config import Params
from effnet.data import prepare
from effnet.download import fetch, read_cifar100


def run(args: argparse.Namespace, params: Params) -> int:
    config = params.data
    archive_path = fetch(config.url, args.cache / "cifar-100-python.tar.gz", config.md5)
    print(f"archive: {archive_path} (md5 {config.md5})")
    meta = prepare(
        read_cifar100(archive_path),
        args.out,
        val_per_class=config.val_per_class,
        seed=config.seed,
        source_md5=config.md5,
    )
    print(f"wrote {args.out}/{{train,val,test}}.npz and meta.json")
    for name, counts in meta["splits"].items():
        per_class = (
            f"{counts['per_class_min']}"
            if counts["per_class_min"] == counts["per_class_max"]
            else f"{counts['per_class_min']}..{counts['per_class_max']}"
        )
        print(f"  {name:5s} {counts['images']:6,d} images, {per_class} per class")
    print("  train mean (R, G, B): " + ", ".join(f"{m:.4f}" for m in meta["mean"]))
    print("  train std  (R, G, B): " + ", ".join(f"{s:.4f}" for s in meta["std"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--out", default="data/cifar100", type=Path, help="prepared arrays (the DVC output)")
    parser.add_argument("--cache", default="data/raw", type=Path, help="where the archive is kept between runs")
    return cli.main(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
