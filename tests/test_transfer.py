"""effnet.transfer: carry parts and their atomic join; a call's archive in chunks, refused when a chunk is lost."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from effnet import transfer
from effnet.transfer import TransferError


def _archive(path: Path, size: int = 10_000) -> str:
    path.write_bytes(os.urandom(size))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_parts_fit_and_a_partial_join_never_sticks(tmp_path):
    archive = tmp_path / "data.tar.gz"
    md5 = _archive(archive)
    folders = transfer.split(archive, tmp_path / "carry", part_bytes=4_000, expected_md5=md5)
    assert [f.name for f in folders] == ["part1", "part2", "part3"]
    assert [sum(p.stat().st_size for p in f.glob("data.tar.gz.*")) for f in folders] == [4_000, 4_000, 2_000]

    store, target = tmp_path / "store", tmp_path / "joined" / "data.tar.gz"
    transfer.stash(folders[0], store)
    transfer.stash(folders[2], store)
    with pytest.raises(TransferError, match=r"parts missing: data\.tar\.gz\.02"):
        transfer.join(store, target)
    assert not target.exists() and not list(target.parent.glob("*")) if target.parent.exists() else True

    transfer.stash(folders[1], store)  # the last part arrives: the join now works
    assert transfer.join(store, target) == target
    assert target.read_bytes() == archive.read_bytes()

    # a damaged part: the joined file is not kept, and nothing half-joined is left behind
    target.unlink()
    part = store / "data.tar.gz.02"
    part.write_bytes(b"x" + part.read_bytes()[1:])
    with pytest.raises(TransferError, match="a part is corrupt"):
        transfer.join(store, target)
    assert list(target.parent.iterdir()) == []


def test_a_part_that_differs_from_its_manifest_is_refused_on_arrival(tmp_path):
    archive = tmp_path / "data.tar.gz"
    md5 = _archive(archive)
    folders = transfer.split(archive, tmp_path / "carry", part_bytes=6_000, expected_md5=md5)
    (folders[0] / "data.tar.gz.01").write_bytes(b"damaged")
    with pytest.raises(TransferError, match="md5 differs from the manifest"):
        transfer.stash(folders[0], tmp_path / "store")
    with pytest.raises(TransferError, match="md5 .*expected 0{32}"):
        transfer.split(archive, tmp_path / "carry2", part_bytes=6_000, expected_md5="0" * 32)


def test_an_archive_comes_back_in_chunks_under_the_file_limit_and_a_lost_chunk_is_refused(tmp_path):
    # the real limits: the cap leaves at most 4 chunks of 15 MiB plus the md5 file, under the 8 files a call returns
    assert -(-transfer.ARCHIVE_CAP_BYTES // transfer.CHUNK_BYTES) + 1 <= 8 and transfer.CHUNK_BYTES < 16 * 2**20
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "big.log").write_bytes(os.urandom(10_000))  # incompressible
    extra = tmp_path / "w.pt"
    extra.write_bytes(os.urandom(3_000))
    files = transfer.pack(staging, tmp_path / "out", extras=[(extra, "weights/w.pt")], chunk_bytes=4_000)
    chunks = [f for f in files if f.name.startswith("results.tar.")]
    assert len(chunks) == -(-sum(f.stat().st_size for f in chunks) // 4_000) >= 2
    assert all(f.stat().st_size <= 4_000 for f in files)
    lines = (tmp_path / "out" / "results.md5").read_text().splitlines()
    assert [line.split()[1] for line in lines] == ["results.tar"] + [c.name for c in chunks]
    results = transfer.extract([tmp_path / "out"], tmp_path / "x")
    assert (results / "big.log").read_bytes() == (staging / "big.log").read_bytes()
    assert (results / "weights" / "w.pt").read_bytes() == extra.read_bytes()

    chunks[1].unlink()  # a chunk lost on the way: refused, nothing extracted
    with pytest.raises(TransferError, match="a chunk is missing or damaged"):
        transfer.extract([tmp_path / "out"], tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()


def test_extras_over_the_cap_are_named_in_the_archive(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "status.json").write_text(json.dumps({}))
    small, large = tmp_path / "small.pt", tmp_path / "large.pt"
    small.write_bytes(b"s" * 1_000)
    large.write_bytes(b"l" * 50_000)
    transfer.pack(staging, tmp_path / "out", extras=[(small, "a/small.pt"), (large, "a/large.pt")], cap_bytes=30_000)
    results = transfer.extract([tmp_path / "out"], tmp_path / "x")
    assert (results / "a" / "small.pt").is_file() and not (results / "a" / "large.pt").exists()
    assert "a/large.pt" in (results / "left_out.txt").read_text()


def test_file_md5_is_the_md5_of_the_bytes(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(os.urandom(3 * 2**20 + 7))  # more than one block
    assert transfer.file_md5(path) == hashlib.md5(path.read_bytes()).hexdigest()
