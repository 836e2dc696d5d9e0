"""The data in parts: a lossless round trip, every md5 checked, a damaged or missing part refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from effnet import carry
from effnet.carry import CarryError, array_md5s, decode, encode, stash
from effnet.data import prepare
from effnet.download import read_cifar100

MIRROR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar-100-python.tar.gz"


def small_archive(train: int = 37, test: int = 11, seed: int = 0) -> dict:
    """A read_cifar100-shaped dict; smooth images with noise, so that WebP has something to predict and something
    not."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> dict:
        ramp = np.linspace(0, 200, 32, dtype=np.float64)[None, :, None, None]
        images = (ramp + rng.integers(0, 56, size=(n, 32, 32, 3))).astype(np.uint8)
        return {
            "images": images,
            "fine_labels": rng.integers(0, 100, n).astype(np.int64),
            "coarse_labels": rng.integers(0, 20, n).astype(np.int64),
        }

    return {
        "train": split(train),
        "test": split(test),
        "fine_label_names": [f"fine{i}" for i in range(100)],
        "coarse_label_names": [f"coarse{i}" for i in range(20)],
    }


def encode_small(archive: dict, tmp_path: Path, **kwargs) -> list[Path]:
    kwargs = {"images_per_sheet": 8, "cols": 2, **kwargs}
    # parts of ~60 % of the whole: two parts
    whole = encode(archive, tmp_path / "probe", part_bytes=2**30, source_md5="0" * 32, **kwargs)
    size = sum(f.stat().st_size for f in whole[0].iterdir() if f.name != carry.MANIFEST)
    return encode(archive, tmp_path / "carry", part_bytes=64 * 1024 + int(size * 0.6), source_md5="0" * 32, **kwargs)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for split in ("train", "test"):
        for key in ("images", "fine_labels", "coarse_labels"):
            assert a[split][key].dtype == b[split][key].dtype, (split, key)
            assert np.array_equal(a[split][key], b[split][key]), (split, key)
    assert a["fine_label_names"] == b["fine_label_names"] and a["coarse_label_names"] == b["coarse_label_names"]


def test_two_parts_round_trip_to_identical_arrays(tmp_path):
    archive = small_archive()
    parts = encode_small(archive, tmp_path)
    assert [p.name for p in parts] == ["part1", "part2"]
    manifest = json.loads((parts[0] / carry.MANIFEST).read_text())
    assert manifest == json.loads((parts[1] / carry.MANIFEST).read_text())
    assert manifest["arrays"] == array_md5s(archive)  # the md5s of the source's arrays
    assert {e["part"] for e in manifest["files"].values()} == {1, 2}
    for part in parts:
        stash(part, tmp_path / "store")
    decoded = decode(tmp_path / "store", workers=2)
    assert_same(decoded, archive)
    assert decoded["train"]["images"].flags.c_contiguous


def test_a_missing_part_is_named(tmp_path):
    parts = encode_small(small_archive(), tmp_path)
    stash(parts[0], tmp_path / "store")
    with pytest.raises(CarryError, match=r"part\(s\) 2 of 2 not stashed"):
        decode(tmp_path / "store")


def test_a_damaged_part_is_refused_on_arrival_and_in_the_store(tmp_path):
    parts = encode_small(small_archive(), tmp_path)
    victim = sorted(parts[1].glob("*.webp"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(CarryError, match=rf"{victim.name}: md5 .* \(part 2\); the part is damaged"):
        stash(parts[1], tmp_path / "store")
    # damaged after it was stashed: decode checks again before it decodes anything
    fresh = encode_small(small_archive(), tmp_path / "again")
    for part in fresh:
        stash(part, tmp_path / "store2")
    (tmp_path / "store2" / victim.name).write_bytes(bytes(data))
    with pytest.raises(CarryError, match=rf"{victim.name}: md5 .*part 2 is damaged"):
        decode(tmp_path / "store2")


def test_decoded_arrays_are_checked_against_the_source_md5(tmp_path):
    parts = encode_small(small_archive(), tmp_path)
    for part in parts:
        stash(part, tmp_path / "store")
    manifest_path = tmp_path / "store" / carry.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["arrays"]["test/images"]["md5"] = "f" * 32  # as if the sheets decoded to other pixels
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CarryError, match="decoded test/images .* differ from the encoded ones"):
        decode(tmp_path / "store")


def test_a_store_of_another_encoding_is_refused(tmp_path):
    first = encode_small(small_archive(seed=0), tmp_path / "a")
    other = encode_small(small_archive(seed=1), tmp_path / "b")
    stash(first[0], tmp_path / "store")
    with pytest.raises(CarryError, match="another encoding"):
        stash(other[1], tmp_path / "store")


def test_a_folder_without_a_manifest_is_not_a_part(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CarryError, match="no manifest"):
        stash(tmp_path / "empty", tmp_path / "store")


def test_prepare_from_the_parts_writes_the_download_stages_splits(synthetic_archive, tmp_path):
    path, md5 = synthetic_archive
    archive = read_cifar100(path)
    # as the download stage: prepare(read_cifar100(archive), out, val_per_class, seed, source_md5=data.md5)
    by_stage = prepare(archive, tmp_path / "stage", val_per_class=2, seed=0, source_md5=md5)
    for part in encode(
        archive, tmp_path / "carry", part_bytes=2**30, source_md5=md5, images_per_sheet=100, cols=10, method=0
    ):
        stash(part, tmp_path / "store")
    by_parts = prepare(decode(tmp_path / "store"), tmp_path / "parts", val_per_class=2, seed=0, source_md5=md5)
    assert by_parts == by_stage
    for split in ("train", "val", "test"):
        with np.load(tmp_path / "stage" / f"{split}.npz") as a, np.load(tmp_path / "parts" / f"{split}.npz") as b:
            assert a.files == b.files
            for key in a.files:
                assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), (split, key)
    assert (tmp_path / "stage" / "meta.json").read_text() == (tmp_path / "parts" / "meta.json").read_text()


def test_bad_sheet_shapes_are_refused(tmp_path):
    with pytest.raises(CarryError, match="multiple of cols"):
        encode(small_archive(), tmp_path / "c", part_bytes=2**30, source_md5="0" * 32, images_per_sheet=10, cols=3)
    with pytest.raises(CarryError, match="16383-pixel side"):
        encode(small_archive(), tmp_path / "c", part_bytes=2**30, source_md5="0" * 32, images_per_sheet=1000, cols=1)


@pytest.mark.skipif(not MIRROR.is_file(), reason="the CIFAR-100 mirror is not beside the checkout")
def test_the_pinned_md5s_are_the_mirrors_arrays():
    assert carry.MIRROR_ARRAYS_MD5, "effnet.carry.MIRROR_ARRAYS_MD5 is empty"
    got = {key: value["md5"] for key, value in array_md5s(read_cifar100(MIRROR)).items()}
    assert got == carry.MIRROR_ARRAYS_MD5


def test_parts_that_claim_the_mirror_must_hold_the_mirrors_arrays(tmp_path):
    """A manifest naming the project's mirror is held to the md5s pinned in the code, not only to its own."""
    archive = small_archive()
    for part in encode(
        archive, tmp_path / "carry", part_bytes=2**30, source_md5=carry.MIRROR_ARCHIVE_MD5, images_per_sheet=8, cols=2
    ):
        stash(part, tmp_path / "store")
    with pytest.raises(CarryError, match="differ from the mirror's"):
        decode(tmp_path / "store")


def load_script():
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "carry.py"
    spec = importlib.util.spec_from_file_location("carry_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_device_commands_stash_then_prepare_and_raise_the_flag_last(synthetic_archive, tmp_path, capsys):
    import yaml

    script = load_script()
    path, md5 = synthetic_archive
    archive = read_cifar100(path)
    parts = encode(
        archive, tmp_path / "carry", part_bytes=2**30, source_md5=md5, images_per_sheet=100, cols=10, method=0
    )
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["data"].update(val_per_class=2, seed=3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out, ready, store = tmp_path / "data" / "cifar100", tmp_path / "data" / "ready.json", tmp_path / "store"
    prepare_args = [
        "prepare",
        "--store",
        str(store),
        "--params",
        str(tmp_path / "params.yaml"),
        "--out",
        str(out),
        "--ready",
        str(ready),
    ]
    assert script.main(prepare_args) == 1  # nothing stashed yet: an error, no flag, no splits
    assert "no manifest" in capsys.readouterr().err and not ready.exists() and not out.exists()
    for part in parts:
        assert script.main(["stash", str(part), "--store", str(store)]) == 0
    assert script.main(prepare_args) == 0
    assert json.loads(ready.read_text())["source_md5"] == md5
    prepare(archive, tmp_path / "stage", val_per_class=2, seed=3, source_md5=md5)
    assert (out / "meta.json").read_text() == (tmp_path / "stage" / "meta.json").read_text()
    with np.load(out / "val.npz") as a, np.load(tmp_path / "stage" / "val.npz") as b:
        assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["fine_labels"], b["fine_labels"])
