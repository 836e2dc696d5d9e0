#!/usr/bin/env python3
"""CIFAR-100 to the GPU machine in two device calls: encode here, stash each part there, then prepare the splits.

    here:    python scripts/carry.py encode [--archive ../shared/data/cifar-100-python.tar.gz] [--margin-mib 6]
    device:  python3 scripts/carry.py stash .carry/data/part1        (call 1; again with part2 in call 2)
    device:  python3 scripts/carry.py prepare [--params params.yaml] (once both are stashed; writes data/cifar100)

`effnet.carry` has the format and the checks. `prepare` writes the same data/cifar100 as the
download stage (the same arrays through `effnet.data.prepare` with params.yaml's data.val_per_class
and data.seed), then the flag file `data/ready.json`, which a background job waits for.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from effnet.carry import CarryError, decode, encode, read_manifest, stash
from effnet.transfer import CALL_LIMIT_BYTES, MIRROR_ARCHIVE_MD5, MIRROR_NAME, file_md5, tree_bytes

ROOT = Path(__file__).resolve().parents[1]

STORE = Path(os.environ.get("EFFNET_CARRY_STORE", "/root/carry-data"))  # outside the repository copy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "encode", help="here: the archive's arrays as WebP sheets in parts that fit a call with the tree"
    )
    p.add_argument("--archive", type=Path, default=ROOT.parent / "shared" / "data" / MIRROR_NAME)
    p.add_argument("--md5", default=MIRROR_ARCHIVE_MD5, help="the archive's md5 (the mirror's by default)")
    p.add_argument("--carry", type=Path, default=ROOT / ".carry" / "data", help="an ignored folder of the checkout")
    p.add_argument(
        "--margin-mib", type=float, default=6.0, help="room left under the call's limit for the tree to grow"
    )
    p.add_argument("--max-parts", type=int, default=2)
    p = sub.add_parser("stash", help="device: check a carried part and keep it outside the repository copy")
    p.add_argument("part", type=Path)
    p.add_argument("--store", type=Path, default=STORE)
    p = sub.add_parser(
        "prepare", help="device: decode the stashed parts and write the splits as the download stage does"
    )
    p.add_argument("--store", type=Path, default=STORE)
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    p.add_argument("--out", type=Path, default=ROOT / "data" / "cifar100")
    p.add_argument("--ready", type=Path, default=ROOT / "data" / "ready.json")
    args = parser.parse_args(argv)
    try:
        if args.command == "encode":
            from effnet.download import read_cifar100

            if subprocess.run(["git", "check-ignore", "-q", str(args.carry / "part1")], cwd=ROOT).returncode != 0:
                raise CarryError(f"{args.carry} is not ignored by git: it would travel with every call; use .carry/")
            if not args.archive.is_file():
                raise CarryError(f"{args.archive}: no such file; pass --archive with the CIFAR-100 mirror")
            got = file_md5(args.archive)
            if got != args.md5:
                raise CarryError(
                    f"{args.archive}: md5 {got}, expected {args.md5}; pass the archive's own md5 with --md5"
                )
            tree = tree_bytes(ROOT)
            part_bytes = int(CALL_LIMIT_BYTES - args.margin_mib * 2**20) - tree
            start = time.perf_counter()
            parts = encode(read_cifar100(args.archive), args.carry, part_bytes=part_bytes, source_md5=got)
            print(
                f"encoded in {time.perf_counter() - start:.0f} s; tree {tree / 2**20:.2f} MiB, parts of at most "
                f"{part_bytes / 2**20:.2f} MiB:"
            )
            for part in parts:
                size = sum(f.stat().st_size for f in part.iterdir())
                print(f"  {part}: {size / 2**20:.2f} MiB, with the tree {(size + tree) / 2**20:.2f} MiB of 64")
            if len(parts) > args.max_parts:
                raise CarryError(f"{len(parts)} parts needed, more than --max-parts {args.max_parts}: shrink the tree")
        elif args.command == "stash":
            copied = stash(args.part, args.store)
            print(f"stashed {len(copied)} file(s) of {args.part} in {args.store}")
        elif args.command == "prepare":
            from effnet.config import load_params
            from effnet.data import prepare

            data = load_params(args.params).data
            start = time.perf_counter()
            archive = decode(args.store)
            decoded_s = time.perf_counter() - start
            source_md5 = read_manifest(args.store)["source_md5"]
            prepare(archive, args.out, val_per_class=data.val_per_class, seed=data.seed, source_md5=source_md5)
            ready = {
                "source_md5": source_md5,
                "decode_s": round(decoded_s, 2),
                "prepare_s": round(time.perf_counter() - start - decoded_s, 2),
                "at": time.time(),
            }
            args.ready.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.ready.with_name(f".{args.ready.name}.tmp")
            tmp.write_text(json.dumps(ready) + "\n")
            os.replace(tmp, args.ready)  # the flag appears only once the splits are complete
            print(f"decoded and checked in {ready['decode_s']} s, prepared {args.out} in {ready['prepare_s']} s")
    except CarryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
