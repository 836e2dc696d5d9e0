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
    closure = [
        p.relative_to(tmp_path.resolve()).as_posix() for p in import_closure(tmp_path / "pkg" / "a.py", root=tmp_path)
    ]
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
    assert {
        "effnet/train.py",
        "effnet/models.py",
        "effnet/efficientnet.py",
        "effnet/data.py",
        "effnet/config.py",
    } <= files
    assert not files & {"effnet/plots.py", "effnet/report.py", "effnet/cam.py"}


def test_a_change_to_library_code_makes_the_search_retrain(tmp_path):
    """An edit to the search's library code retrains every candidate instead of reusing it "(finished earlier)"."""
    import shutil
    import subprocess
    import sys
    from types import SimpleNamespace

    from effnet.search import Candidate, run_search

    tree = tmp_path / "repo"  # a copy of the project's code, so that its files can be edited
    for package in ("effnet", "stages"):
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))

    def search_key() -> str:
        # what stages/search.py computes, with this copy as the repository (fingerprint.ROOT is its parent)
        code = (
            "import sys; from pathlib import Path; "
            "from effnet.fingerprint import fingerprint; "
            "print(fingerprint({'train': {'lr': 0.1}}, code=[Path(sys.argv[1]) / 'stages/search.py']))"
        )
        return subprocess.run(
            [sys.executable, "-c", code, str(tree)], cwd=tree, capture_output=True, text=True, check=True
        ).stdout.strip()  # cwd: the copy's `effnet` comes before the installed one

    candidates = [Candidate(1.2, 1.1, 1.15), Candidate(1.1, 1.1, 1.2)]
    # two different networks, one candidate each (what effnet.search.place and group_identical give)
    groups = [
        [
            SimpleNamespace(
                candidate=c, architecture=f"net{i}", phi=1.0, spec=SimpleNamespace(resolution=32), flops_ratio=2.0
            )
        ]
        for i, c in enumerate(candidates)
    ]
    trained = []

    def train_candidate(placed, seed_index):
        trained.append(placed.candidate.key)
        return {"val_top1": 0.5, "val_correct": [1, 0]}

    def search() -> int:
        trained.clear()
        key = search_key()
        run_search(groups, train_candidate, tmp_path / "scratch" / key, key, log=None)
        return len(trained)

    assert search() == 2
    assert search() == 0  # same code, same settings: the finished candidates are reused
    (tree / "effnet/plots.py").write_text((tree / "effnet/plots.py").read_text() + "\n# not imported by the search\n")
    assert search() == 0
    library = tree / "effnet/search.py"
    library.write_text(library.read_text().replace("def decide(", "def decide(  ", 1))  # an edit of the library
    assert search() == 2  # every candidate retrains
