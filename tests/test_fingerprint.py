"""effnet.fingerprint: result caches depend on the settings and on the code that made them."""

from __future__ import annotations

from pathlib import Path

from effnet.fingerprint import ROOT, code_hash, fingerprint, import_closure


def _tree(root: Path) -> None:
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "a.py").write_text("import os\nfrom pkg.b import f\n")
    (root / "pkg" / "b.py").write_text("def f():\n    from pkg import c\n    return c\n")
    (root / "pkg" / "c.py").write_text("X = 1\n")
    (root / "pkg" / "unused.py").write_text("Y = 2\n")


def test_closure_follows_imports_at_any_depth_inside_the_repository(tmp_path):
    _tree(tmp_path)
    closure = [p.relative_to(tmp_path.resolve()).as_posix() for p in import_closure(tmp_path / "pkg" / "a.py", root=tmp_path)]
    assert closure == ["pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/c.py"]  # os is outside; unused is not imported


def test_code_hash_changes_with_imported_code_only(tmp_path):
    _tree(tmp_path)
    entry = tmp_path / "pkg" / "a.py"
    before = code_hash(entry, root=tmp_path)
    (tmp_path / "pkg" / "unused.py").write_text("Y = 3\n")
    assert code_hash(entry, root=tmp_path) == before
    (tmp_path / "pkg" / "c.py").write_text("X = 2\n")  # imported inside a function of b, two steps away
    assert code_hash(entry, root=tmp_path) != before


def test_fingerprint_depends_on_settings_and_code(tmp_path):
    _tree(tmp_path)
    settings = {"train": {"lr": 0.1}}
    assert fingerprint(settings) == fingerprint({"train": {"lr": 0.1}})
    assert fingerprint(settings) != fingerprint({"train": {"lr": 0.2}})
    assert fingerprint(settings) != fingerprint(settings, code=[ROOT / "effnet" / "train.py"])


def test_the_trainer_closure_is_the_training_code():
    files = {p.relative_to(ROOT).as_posix() for p in import_closure(ROOT / "effnet" / "train.py")}
    assert {"effnet/train.py", "effnet/models.py", "effnet/efficientnet.py", "effnet/data.py", "effnet/config.py"} <= files
    assert not files & {"effnet/plots.py", "effnet/report.py", "effnet/cam.py"}
