"""Shared fixtures: a synthetic CIFAR-100 archive and prepared arrays built from one.

`prepared_data_dir` is session-scoped and small (10 training images per class, 2 of them
for validation, 2 test images per class), so any test that needs data on disk can use it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from effnet.data import prepare
from effnet.download import read_cifar100
from effnet.synthetic import write_synthetic_archive

TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS = 10, 2, 2


@pytest.fixture
def synthetic_archive(tmp_path: Path) -> tuple[Path, str]:
    """(path, md5) of a fresh synthetic `cifar-100-python.tar.gz`: 10 train / 2 test per class."""
    path = tmp_path / "source" / "cifar-100-python.tar.gz"
    md5 = write_synthetic_archive(path, train_per_class=TRAIN_PER_CLASS, test_per_class=TEST_PER_CLASS, seed=0)
    return path, md5


@pytest.fixture(scope="session")
def prepared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared data directory (train 8 / val 2 / test 2 per class, meta.json), built once.

    Treat it as read-only: it is shared by every test of the session.
    """
    root = tmp_path_factory.mktemp("data")
    archive = root / "cifar-100-python.tar.gz"
    md5 = write_synthetic_archive(archive, train_per_class=TRAIN_PER_CLASS, test_per_class=TEST_PER_CLASS, seed=0)
    out = root / "cifar100"
    prepare(read_cifar100(archive), out, val_per_class=VAL_PER_CLASS, seed=0, source_md5=md5)
    return out
