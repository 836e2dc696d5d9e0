"""Files to and from a bare device machine within one call's limits: the carried data and the returned results.

A device call carries at most `CALL_LIMIT_BYTES`, the working tree included, and returns at
most 8 files of 16 MiB. So a large file goes in parts, and a call's results come back as one
archive in chunks, every piece with its md5:

    here:    split(archive, carry_dir, part_bytes=...)    -> carry_dir/partN/ (a piece and MANIFEST.json each)
    device:  stash(carry_dir/partN, store)                (one call per part; checked as it arrives)
    device:  join(store, target)                          (atomically: a partial join never sticks)
    device:  pack(staging, out, extras=...)               -> out/results.tar[.NN] and out/results.md5
    here:    extract(files, into)                         (the chunks joined and checked first)

Standard library only, so that `scripts/gpu.py prepare`, `stash` and `unpack` run with
nothing installed, and `scripts/carry.py` shares its md5 and tree size. What a window runs
and which of its files come home is `scripts/gpu.py`'s policy, not this module's.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

# The project's CIFAR-100 mirror (../shared/data/): its name and md5. params.yaml's data.md5 is the
# official archive's, which differs (effnet.download.MIRROR_HINT).
MIRROR_NAME = "cifar-100-python.tar.gz"
MIRROR_ARCHIVE_MD5 = "489088aff4823e5bdf2d51ec904dbfdb"
CALL_LIMIT_BYTES = 64 * 2**20  # what one device call carries, the tree included
CHUNK_BYTES = 15 * 2**20  # a returned chunk: under the 16 MiB per returned file
ARCHIVE_CAP_BYTES = 56 * 2**20  # a call's archive: under the 64 MiB returned per call, with room for the md5 file
MANIFEST = "MANIFEST.json"


class TransferError(RuntimeError):
    """A part or chunk is missing or damaged; the message names it and what to do."""


def file_md5(path: Path) -> str:
    """The md5 of a file, read in 1 MiB blocks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_bytes(root: Path) -> int:
    """Bytes of what every device call sends: tracked files plus untracked files that git does not ignore."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sum((root / n.decode()).stat().st_size for n in names if n and (root / n.decode()).is_file())


# --------------------------------------------------------------------------------------
# carry: a large file in parts, one per call
# --------------------------------------------------------------------------------------


def split(archive: Path, carry_dir: Path, *, part_bytes: int, expected_md5: str) -> list[Path]:
    """Split `archive` into `carry_dir/partN/` folders of at most `part_bytes`, each with a MANIFEST.json.

    The manifest names the whole file, its md5 and every part's md5, so that the device can
    check each part as it arrives and the joined file before using it.
    """
    if not archive.is_file():
        raise TransferError(f"{archive}: no such file; pass --archive with the CIFAR-100 mirror")
    whole_md5 = file_md5(archive)
    if whole_md5 != expected_md5:
        raise TransferError(f"{archive}: md5 {whole_md5}, expected {expected_md5}")
    shutil.rmtree(carry_dir, ignore_errors=True)
    parts, index = [], 0
    with open(archive, "rb") as f:
        while block := f.read(part_bytes):
            index += 1
            folder = carry_dir / f"part{index}"
            folder.mkdir(parents=True)
            (folder / f"{archive.name}.{index:02d}").write_bytes(block)
            parts.append(
                {
                    "file": f"{archive.name}.{index:02d}",
                    "bytes": len(block),
                    "md5": hashlib.md5(block, usedforsecurity=False).hexdigest(),
                }
            )
    manifest = {"name": archive.name, "bytes": archive.stat().st_size, "md5": whole_md5, "parts": parts}
    folders = sorted(carry_dir.glob("part*"), key=lambda p: int(p.name[4:]))
    for folder in folders:
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folders


def stash(part_dir: Path, store: Path) -> list[str]:
    """Copy a carried part (verified against its manifest) into `store`, which outlives the repository copy."""
    manifest = json.loads((part_dir / MANIFEST).read_text())
    store.mkdir(parents=True, exist_ok=True)
    copied = []
    for part in manifest["parts"]:
        source = part_dir / part["file"]
        if not source.is_file():
            continue
        if file_md5(source) != part["md5"]:
            raise TransferError(f"{source}: md5 differs from the manifest; prepare and carry it again")
        tmp = store / f".{part['file']}.tmp"
        shutil.copyfile(source, tmp)
        os.replace(tmp, store / part["file"])
        copied.append(part["file"])
    shutil.copyfile(part_dir / MANIFEST, store / MANIFEST)
    return copied


def join(store: Path, target: Path) -> Path:
    """Join the parts in `store` into `target`, atomically: a temporary file, its md5 checked, then renamed.

    A missing or wrong part raises TransferError naming it, and leaves no `target` behind, so a
    later call with every part present joins afresh. An existing `target` with the right md5 is kept.
    """
    manifest_path = store / MANIFEST
    if not manifest_path.is_file():
        raise TransferError(f"{manifest_path}: no manifest; carry the parts first (scripts/gpu.py stash)")
    manifest = json.loads(manifest_path.read_text())
    if target.is_file() and file_md5(target) == manifest["md5"]:
        return target
    missing = [p["file"] for p in manifest["parts"] if not (store / p["file"]).is_file()]
    if missing:
        raise TransferError(
            f"{store}: parts missing: {', '.join(missing)}; carry them (scripts/gpu.py stash) and run again"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.joining-{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            for part in manifest["parts"]:
                with open(store / part["file"], "rb") as f:
                    shutil.copyfileobj(f, out)
        got = file_md5(tmp)
        if got != manifest["md5"]:
            raise TransferError(
                f"joined {manifest['name']} has md5 {got}, expected {manifest['md5']}; "
                "a part is corrupt: carry the parts again"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# --------------------------------------------------------------------------------------
# return: a call's results as one archive in chunks
# --------------------------------------------------------------------------------------


def pack(
    staging: Path,
    out: Path,
    *,
    extras: list[tuple[Path, str]],
    chunk_bytes: int = CHUNK_BYTES,
    cap_bytes: int = ARCHIVE_CAP_BYTES,
) -> list[Path]:
    """One tar of `staging` (as `results/`) plus as many `extras` (path, name in the archive) as fit `cap_bytes`, in
    their order, split in `chunk_bytes` chunks.

    Writes `out/results.tar` (or `.00`, `.01`, ...) and `out/results.md5` (md5 of the whole
    archive and of each chunk). Extras that do not fit are named in `left_out.txt` inside.
    """

    def build(included: list[tuple[Path, str]]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:  # not gzipped: weights do not compress, logs are small
            tar.add(staging, arcname="results")
            for path, name in included:
                tar.add(path, arcname=f"results/{name}")
        return buffer.getvalue()

    size = len(build([]))
    included: list[tuple[Path, str]] = []
    left = []
    for extra in extras:
        grows = 1024 + -(-extra[0].stat().st_size // 512) * 512  # headers (long names too) and padding
        if size + grows <= cap_bytes - 4096:
            included.append(extra)
            size += grows
        else:
            left.append(extra[1])
    if left:
        (staging / "left_out.txt").write_text(
            "over the per-call limit, left on the machine:\n" + "\n".join(left) + "\n"
        )
    blob = build(included)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    if len(blob) <= chunk_bytes:
        files.append(out / "results.tar")
        files[0].write_bytes(blob)
    else:
        for i in range(0, len(blob), chunk_bytes):
            path = out / f"results.tar.{i // chunk_bytes:02d}"
            path.write_bytes(blob[i : i + chunk_bytes])
            files.append(path)
    lines = [f"{hashlib.md5(blob, usedforsecurity=False).hexdigest()}  results.tar"]
    lines += [f"{file_md5(p)}  {p.name}" for p in files if p.name != "results.tar"]
    (out / "results.md5").write_text("\n".join(lines) + "\n")
    return files + [out / "results.md5"]


def extract(sources: list[Path], into: Path) -> Path:
    """Join a call's chunks (files, or folders holding them), check the whole against results.md5 and extract it
    into `into`; returns `into/results`. Nothing is extracted from an archive that fails its md5."""
    files = sorted(p for s in sources for p in (sorted(s.iterdir()) if s.is_dir() else [s]))
    md5_file = next((p for p in files if p.name == "results.md5"), None)
    chunks = [p for p in files if p.name.startswith("results.tar")]
    if md5_file is None or not chunks:
        raise TransferError(f"no results.md5 and results.tar[.NN] among {[str(s) for s in sources]}")
    expected = md5_file.read_text().split()[0]
    blob = b"".join(p.read_bytes() for p in chunks)
    if hashlib.md5(blob, usedforsecurity=False).hexdigest() != expected:
        raise TransferError(
            f"the archive's md5 differs from results.md5 ({len(chunks)} chunk(s)): a chunk is missing "
            "or damaged; fetch the call's files again"
        )
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        tar.extractall(into, filter="data")
    return Path(into) / "results"
