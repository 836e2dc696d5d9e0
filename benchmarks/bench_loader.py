"""Images/s of `DeviceLoader` against the loader a user would write with torchvision.

    python benchmarks/bench_loader.py [--data data/cifar100] [--archive data/raw/cifar-100-python.tar.gz]
                                      [--device cpu|cuda|all] [--epochs-to-time 1] [--workers 2]

Both sides do the same work per image on a training epoch at batch 256, 32x32: a random
crop after 4-pixel reflect padding, a horizontal flip with p = 0.5, conversion to float and
normalisation. The reference is torchvision's `datasets.CIFAR100` with PIL transforms
(RandomCrop, RandomHorizontalFlip, ToTensor, Normalize) in a `DataLoader` with worker
processes, its batches moved to the device (pinned memory on CUDA). Each loader runs one
untimed warm-up epoch, then `--epochs-to-time` timed epochs; on CUDA the clock stops after a
synchronisation. Without `--data`/`--archive` on disk a synthetic archive of the same size
is made (and said so). A script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms

from effnet.data import DeviceLoader, load_meta, load_split, prepare
from effnet.download import MEMBERS, file_md5, read_cifar100
from effnet.report import cpu_name
from effnet.synthetic import write_synthetic_archive


class VerifiedCIFAR100(torchvision.datasets.CIFAR100):
    """torchvision's CIFAR100, trusting an archive whose own md5 we have verified.

    torchvision checks the official md5 of both `train` and `test`; the project's mirror
    stores `test` in another order (see ../shared/data/README.md), so the check fails although
    the archive matches the md5 that goes with its URL.
    """

    def __init__(self, root: Path, **kwargs) -> None:
        self.meta = {**torchvision.datasets.CIFAR100.meta, "md5": file_md5(root / "cifar-100-python" / "meta")}
        super().__init__(str(root), download=False, **kwargs)

    def _check_integrity(self) -> bool:
        return True


def time_epochs(batches, epochs: int, device: torch.device, set_epoch=None) -> tuple[float, int]:
    """Seconds and images for `epochs` epochs after one warm-up epoch; batches end on `device`."""
    images, start = 0, 0.0
    for epoch in range(epochs + 1):
        if epoch == 1:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start, images = time.perf_counter(), 0
        if set_epoch:
            set_epoch(epoch)
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            images += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/cifar100"), help="prepared arrays (download stage)")
    parser.add_argument("--archive", type=Path, default=Path("data/raw/cifar-100-python.tar.gz"))
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument("--epochs-to-time", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes of the reference")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "error: --device cuda but torch sees no CUDA device (torch.cuda.is_available() is False); "
            "run on the GPU machine, or use --device cpu",
            file=sys.stderr,
        )
        return 2

    scratch = Path(tempfile.mkdtemp(prefix="bench_loader-"))
    try:
        return run(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(args: argparse.Namespace, scratch: Path) -> int:
    if args.data.is_dir() and args.archive.is_file():
        if file_md5(args.archive) != load_meta(args.data)["source_md5"]:
            print(f"error: {args.archive} is not the archive {args.data} was prepared from", file=sys.stderr)
            return 1
        archive, data, origin = args.archive, args.data, f"{args.data} and {args.archive} (md5 verified)"
    else:  # synthetic, CIFAR-100-sized
        archive = scratch / "cifar-100-python.tar.gz"
        md5 = write_synthetic_archive(archive, train_per_class=500, test_per_class=10)
        data = scratch / "cifar100"
        prepare(read_cifar100(archive), data, val_per_class=50, seed=0, source_md5=md5)
        origin = f"SYNTHETIC data ({args.data} or {args.archive} missing)"
    with tarfile.open(archive) as tar:  # the reference reads the extracted pickles, as torchvision does
        for name in MEMBERS:
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            (scratch / name).write_bytes(tar.extractfile(name).read())

    meta, train = load_meta(data), load_split(data, "train")
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    reference_set = VerifiedCIFAR100(
        scratch,
        train=True,
        transform=transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        ),
    )

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if "cuda" in devices else ""
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"CPU {cpu_name()} ({torch.get_num_threads()} threads){gpu}"
    )
    print(
        f"data: {origin}; DeviceLoader on the {len(train):,} images of the train split, "
        f"reference on torchvision's {len(reference_set):,}"
    )
    print(
        f"batch {args.batch_size}, train mode (reflect-pad 4 + random crop, flip), 32x32, "
        f"1 warm-up + {args.epochs_to_time} timed epoch(s)"
    )
    for name in devices:
        device = torch.device(name)
        start = time.perf_counter()
        ours = DeviceLoader(
            train.images,
            train.fine_labels,
            batch_size=args.batch_size,
            train=True,
            device=device,
            mean=mean,
            std=std,
            crop_padding=4,
            hflip=True,
        )
        setup = time.perf_counter() - start
        seconds, images = time_epochs(ours, args.epochs_to_time, device, ours.set_epoch)
        ours_rate = images / seconds
        reference = DataLoader(
            reference_set,
            batch_size=args.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=args.workers > 0,
        )
        ref_seconds, ref_images = time_epochs(reference, args.epochs_to_time, device)
        ref_rate = ref_images / ref_seconds
        print(
            f"[{name}] DeviceLoader: {ours_rate:12,.0f} images/s ({images:,} images in {seconds:.2f} s; "
            f"set-up {setup:.2f} s, once)"
        )
        print(
            f"[{name}] torchvision CIFAR100 + PIL, {args.workers} workers: {ref_rate:12,.0f} images/s "
            f"({ref_images:,} images in {ref_seconds:.2f} s)"
        )
        print(f"[{name}] ratio: {ours_rate / ref_rate:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
