"""CIFAR-100's arrays, losslessly compressed, in parts that each travel in one device call beside the tree.

A device call carries at most 64 MiB, the working tree included, and the archive
(`cifar-100-python.tar.gz`, 161 MiB) needs three such calls. Its images compress much better
as images than as gzipped pickles: tiled into sheets of `images_per_sheet` 32x32 images (a
`rows` x `cols` grid) and written as lossless WebP, the 60,000 images take about 0.55 of their
raw 184 MB (docs/lease.md has the measured sizes), which fits two calls.

    here (with the archive):  encode(read_cifar100(archive), carry_dir, part_bytes=..., source_md5=...)
                              -> carry_dir/part1/, carry_dir/part2/, each with manifest.json
    device, each call:        stash(carry_dir/partN, store)     (the store outlives the repository copy)
    device, once all are in:  decode(store) -> the same dict as read_cifar100(archive)

`stash` checks each file's md5 against the manifest as it arrives; `decode` checks every file
again, decodes, and compares the md5 of each decoded array with the manifest's, which `encode`
took from the mirror's own arrays (and, for the project's mirror, with `MIRROR_ARRAYS_MD5`,
measured here). Any difference raises CarryError naming the file or array and what to do; nothing
half-decoded is returned. `effnet.data.prepare(decode(store), ...)` with the download stage's
`val_per_class`, `seed` and the archive's md5 then writes the same splits as the download stage,
since it is handed the same arrays. Needs numpy and Pillow (with WebP) only.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, features

from effnet.transfer import MIRROR_ARCHIVE_MD5

FORMAT = "effnet-cifar100-webp/1"
MANIFEST = "manifest.json"
LABELS = "labels.npz"
SPLITS = ("train", "test")
LABEL_KEYS = ("fine_labels", "coarse_labels")
SIDE = 32  # CIFAR's images are 32x32 RGB

# md5 of the C-order bytes of the arrays that effnet.download.read_cifar100 reads from the project's
# mirror (archive md5 MIRROR_ARCHIVE_MD5), measured here; tests/test_carry.py checks them against the
# mirror when it is present.
MIRROR_ARRAYS_MD5 = {
    "train/images": "111db26282d380128f3126515677de38",
    "train/fine_labels": "a6d83e1ba403abb4d4d51a4851d27312",
    "train/coarse_labels": "dd66a5bfeca203b51e9a7163b4e217a2",
    "test/images": "d626693169341323b3c1971e27107045",
    "test/fine_labels": "29322455ce6dd077e7d4903549ab69e9",
    "test/coarse_labels": "18eeb7596348b45bb4b787085d0675c7",
}


class CarryError(RuntimeError):
    """The carried data is missing, damaged or not what was encoded. The message names the file and the fix."""


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def array_md5s(archive: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"train/images": {"dtype", "shape", "md5"}, ...}: every array of a read_cifar100 dict, md5 of its C-order
    bytes."""
    out = {}
    for split in SPLITS:
        for key in ("images", *LABEL_KEYS):
            array = np.ascontiguousarray(archive[split][key])
            out[f"{split}/{key}"] = {
                "dtype": str(array.dtype),
                "shape": list(array.shape),
                "md5": _md5(array.tobytes()),
            }
    return out


def _sheet(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Tile up to rows*cols images (N, 32, 32, 3) into one (rows*32, cols*32, 3) image, zero-padded at the end."""
    grid = np.zeros((rows * cols, SIDE, SIDE, 3), dtype=np.uint8)
    grid[: len(images)] = images
    # (rows, cols, 32, 32, 3) -> (rows, 32, cols, 32, 3): row-major tiles
    return grid.reshape(rows, cols, SIDE, SIDE, 3).transpose(0, 2, 1, 3, 4).reshape(rows * SIDE, cols * SIDE, 3)


def _unsheet(sheet: np.ndarray, rows: int, cols: int, count: int) -> np.ndarray:
    tiles = sheet.reshape(rows, SIDE, cols, SIDE, 3).transpose(0, 2, 1, 3, 4).reshape(rows * cols, SIDE, SIDE, 3)
    return tiles[:count]


def _encode_webp(image: np.ndarray, method: int) -> bytes:
    buffer = io.BytesIO()
    # lossless: quality sets the effort of the compression, not a loss
    Image.fromarray(image, mode="RGB").save(buffer, "WEBP", lossless=True, quality=100, method=method, exact=True)
    return buffer.getvalue()


def _decode_webp(data: bytes, name: str, shape: tuple[int, int]) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            array = np.asarray(image.convert("RGB"))
    except Exception as error:  # Pillow raises several kinds on a damaged file
        raise CarryError(f"{name}: not a readable WebP image ({error}); carry its part again") from error
    if array.shape != (*shape, 3):
        raise CarryError(f"{name}: decoded to {array.shape}, expected {(*shape, 3)}; carry its part again")
    return array


def _require_webp() -> None:
    if not features.check("webp"):
        raise CarryError("this Pillow was built without WebP support; install a Pillow wheel (they include it)")


def encode(
    archive: dict[str, Any],
    carry_dir: Path,
    *,
    part_bytes: int,
    source_md5: str,
    images_per_sheet: int = 500,
    cols: int = 1,
    method: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write `archive` (read_cifar100's dict) as WebP sheets in as few `carry_dir/partN/` folders as fit `part_bytes`.

    Every part holds its sheets (`train-000.webp`, ...; the labels in part 1) and the same
    `manifest.json`: the format, the grid, the class names, every file's part, size and md5,
    and the md5 of every array (`array_md5s`). Sheets are cut into parts in order, the cut made
    near equal sizes. `carry_dir` is replaced only when complete. Returns the part folders.
    `progress(done, total)` is called after each sheet.
    """
    _require_webp()
    if images_per_sheet < 1 or cols < 1 or images_per_sheet % cols:
        raise CarryError(f"images_per_sheet ({images_per_sheet}) must be a positive multiple of cols ({cols})")
    rows = images_per_sheet // cols
    if max(rows, cols) * SIDE > 16383:
        raise CarryError(f"a {rows}x{cols} sheet is over WebP's 16383-pixel side; use fewer images per sheet")
    files: dict[str, bytes] = {}
    splits: dict[str, dict[str, Any]] = {}
    total = sum(-(-len(archive[s]["images"]) // images_per_sheet) for s in SPLITS)
    for split in SPLITS:
        images = np.asarray(archive[split]["images"])
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (SIDE, SIDE, 3):
            raise CarryError(f"{split} images must be uint8 (N, 32, 32, 3), got {images.dtype} {images.shape}")
        names = []
        for index, first in enumerate(range(0, len(images), images_per_sheet)):
            name = f"{split}-{index:03d}.webp"
            files[name] = _encode_webp(_sheet(images[first : first + images_per_sheet], rows, cols), method)
            names.append(name)
            if progress is not None:
                progress(len(files), total)
        splits[split] = {"images": int(len(images)), "sheets": names}
    labels = io.BytesIO()
    arrays = {}
    for split in SPLITS:
        for key in LABEL_KEYS:
            values = np.asarray(archive[split][key])
            if values.min(initial=0) < 0 or values.max(initial=0) > 255:
                raise CarryError(f"{split} {key} must lie in 0..255 to be stored as uint8")
            arrays[f"{split}_{key}"] = values.astype(np.uint8)
    np.savez_compressed(labels, **arrays)
    files = {LABELS: labels.getvalue(), **files}

    # cut in order near total / count, never over part_bytes (the manifest, a few KB, is counted in each part)
    manifest_reserve = 64 * 1024
    room = part_bytes - manifest_reserve
    sizes = [len(b) for b in files.values()]
    if max(sizes) > room:
        raise CarryError(f"a sheet of {max(sizes)} bytes does not fit a part of {part_bytes} bytes; use smaller sheets")
    count = max(1, -(-sum(sizes) // room))
    while True:
        # a file goes to the part its middle byte falls in, with `count` parts of equal share
        share, start, part_of = sum(sizes) / count, 0, {}
        for name, size in zip(files, sizes, strict=True):
            part_of[name] = min(count, 1 + int((start + size / 2) // share))
            start += size
        if all(
            sum(s for n, s in zip(files, sizes, strict=True) if part_of[n] == p) <= room for p in range(1, count + 1)
        ):
            break
        count += 1
    part = count
    manifest = {
        "format": FORMAT,
        "source_md5": source_md5,
        "grid": {"rows": rows, "cols": cols},
        "parts": part,
        "splits": splits,
        "fine_label_names": list(archive["fine_label_names"]),
        "coarse_label_names": list(archive["coarse_label_names"]),
        "arrays": array_md5s(archive),
        "files": {name: {"part": part_of[name], "bytes": len(data), "md5": _md5(data)} for name, data in files.items()},
    }
    text = json.dumps(manifest, indent=1) + "\n"
    carry_dir = Path(carry_dir)
    tmp = carry_dir.with_name(f".{carry_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for p in range(1, part + 1):
            (tmp / f"part{p}").mkdir(parents=True)
            (tmp / f"part{p}" / MANIFEST).write_text(text)
        for name, data in files.items():
            (tmp / f"part{part_of[name]}" / name).write_bytes(data)
        shutil.rmtree(carry_dir, ignore_errors=True)
        os.replace(tmp, carry_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [carry_dir / f"part{p}" for p in range(1, part + 1)]


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise CarryError(f"{path}: no manifest; this is not a carried part (make them with scripts/carry.py encode)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise CarryError(
            f"{path}: format {manifest.get('format')!r}, this code reads {FORMAT!r}; encode the parts again"
        )
    return manifest


def stash(part_dir: Path, store: Path) -> list[str]:
    """Copy one carried part into `store` (outside the repository copy, which the next call replaces); returns the
    files.

    Each file is checked against the manifest before it is copied; a store that holds another
    encoding's manifest is refused (remove it, or use another store).
    """
    part_dir, store = Path(part_dir), Path(store)
    manifest = read_manifest(part_dir)
    store.mkdir(parents=True, exist_ok=True)
    if (store / MANIFEST).is_file() and read_manifest(store) != manifest:
        raise CarryError(f"{store} holds parts of another encoding; remove {store} and stash every part again")
    copied = []
    for name, entry in manifest["files"].items():
        source = part_dir / name
        if not source.is_file():
            continue  # another part's
        data = source.read_bytes()
        if _md5(data) != entry["md5"]:
            raise CarryError(
                f"{source}: md5 {_md5(data)}, the manifest says {entry['md5']} (part {entry['part']}); "
                "the part is damaged: encode and carry it again"
            )
        tmp = store / f".{name}.tmp-{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, store / name)
        copied.append(name)
    shutil.copyfile(part_dir / MANIFEST, store / MANIFEST)
    return copied


def decode(store: Path, *, workers: int | None = None) -> dict[str, Any]:
    """The arrays of the carried parts in `store`, as `effnet.download.read_cifar100` returns them, every md5 checked.

    Raises CarryError naming the first missing or damaged file (and its part), or the array whose
    decoded md5 differs from the mirror's.
    """
    _require_webp()
    store = Path(store)
    manifest = read_manifest(store)
    missing = sorted({entry["part"] for name, entry in manifest["files"].items() if not (store / name).is_file()})
    if missing:
        raise CarryError(
            f"{store}: part(s) {', '.join(map(str, missing))} of {manifest['parts']} not stashed; "
            "carry and stash them first"
        )
    blobs = {}
    for name, entry in manifest["files"].items():
        data = (store / name).read_bytes()
        if _md5(data) != entry["md5"]:
            raise CarryError(
                f"{store / name}: md5 {_md5(data)}, the manifest says {entry['md5']}: "
                f"part {entry['part']} is damaged; carry and stash it again"
            )
        blobs[name] = data
    rows, cols = manifest["grid"]["rows"], manifest["grid"]["cols"]
    shape = (rows * SIDE, cols * SIDE)
    archive: dict[str, Any] = {}
    with np.load(io.BytesIO(blobs[LABELS]), allow_pickle=False) as labels:
        for split in SPLITS:
            archive[split] = {key: labels[f"{split}_{key}"].astype(np.int64) for key in LABEL_KEYS}
    with ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 1)) as pool:
        for split in SPLITS:
            info = manifest["splits"][split]
            sheets = list(pool.map(lambda name: _decode_webp(blobs[name], name, shape), info["sheets"]))
            counts = [min(rows * cols, info["images"] - i * rows * cols) for i in range(len(sheets))]
            archive[split]["images"] = np.ascontiguousarray(
                np.concatenate([_unsheet(s, rows, cols, c) for s, c in zip(sheets, counts, strict=True)])
            )
    archive = {
        "train": archive["train"],
        "test": archive["test"],
        "fine_label_names": list(manifest["fine_label_names"]),
        "coarse_label_names": list(manifest["coarse_label_names"]),
    }
    got = array_md5s(archive)
    expected = manifest["arrays"]
    if manifest["source_md5"] == MIRROR_ARCHIVE_MD5:
        pinned = {k: v["md5"] for k, v in expected.items()}
        if pinned != MIRROR_ARRAYS_MD5:
            raise CarryError(
                "the manifest's array md5s differ from the mirror's (effnet.carry.MIRROR_ARRAYS_MD5); "
                "encode the parts again from ../shared/data/cifar-100-python.tar.gz"
            )
    for key, want in expected.items():
        if got.get(key) != want:
            raise CarryError(
                f"decoded {key} is {got.get(key)}, the mirror's is {want}: the decoded arrays differ from "
                "the encoded ones; encode and carry the parts again"
            )
    return archive
