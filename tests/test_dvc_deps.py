"""dvc.yaml lists, for every stage, exactly the code that stage runs: its scripts and their import closure.

DVC re-runs a stage when one of its `deps` changes. A module the stage imports but does not
list would let an edit slip by with stale results; a listed module it never imports re-runs
it for nothing. The closure is computed from the source (`effnet.fingerprint.import_closure`),
so the two cannot drift apart. `effnet/study.py` reads `study.yaml`, so a stage that imports it
lists that file too.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from effnet.fingerprint import ROOT, import_closure

SCRIPT = re.compile(r"(?<![\w/.])stages[/.]\w+(?:\.py)?")  # stages/train.py (supervised) or -m stages.evaluate


def script_path(found: str) -> str:
    """'stages/train.py' or 'stages.evaluate' (a module run with -m) as the script's path: stages/evaluate.py."""
    return found if found.endswith(".py") else found.replace(".", "/") + ".py"


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _code(paths) -> set[str]:
    """The Python files among `paths`, less empty package markers (`effnet/__init__.py`: nothing to re-run for)."""
    return {p for p in paths if isinstance(p, str) and p.endswith(".py") and not _empty_init(p)}


def _empty_init(path: str) -> bool:
    return path.endswith("__init__.py") and (ROOT / path).read_text().strip() == ""


@pytest.mark.parametrize("name", sorted(_stages()))
def test_code_deps_are_the_import_closure(name):
    stage = _stages()[name]
    scripts = [script_path(s) for s in SCRIPT.findall(stage["cmd"])]
    assert scripts, f"{name}: no stages/<script>.py in its cmd {stage['cmd']!r}"
    closure = _code(p.relative_to(ROOT).as_posix() for p in import_closure(*(ROOT / s for s in scripts)))
    listed = _code(stage.get("deps", []))
    assert not closure - listed, f"{name}: imports code that dvc.yaml does not list: {sorted(closure - listed)}"
    assert not listed - closure, f"{name}: lists code it never imports: {sorted(listed - closure)}"
    # effnet/study.py reads the study file: a stage that imports it depends on both
    reads_study = "effnet/study.py" in closure
    assert ("study.yaml" in stage.get("deps", [])) == reads_study, (
        f"{name}: {'imports effnet/study.py but does not list' if reads_study else 'lists'} study.yaml"
    )


def test_every_listed_dep_exists():
    for name, stage in _stages().items():
        for dep in _code(stage.get("deps", [])):
            assert (ROOT / dep).is_file(), f"{name}: {dep} does not exist"


def _uncached_outputs(stage: dict) -> dict[str, dict]:
    return {
        path: flags
        for kind in ("outs", "metrics")
        for entry in stage.get(kind, [])
        if isinstance(entry, dict)
        for path, flags in entry.items()
        if isinstance(flags, dict) and flags.get("cache") is False
    }


def test_a_failed_training_stage_leaves_the_committed_small_outputs_in_place():
    # DVC deletes a stage's outputs before running it; the committed (uncached) ones of the stages that train
    # (the search's result and table, every DVCLive directory) are `persist`, so a failure before the new ones
    # are written does not leave the workspace without them (issue 27)
    for name, stage in _stages().items():
        if "${launch}" not in str(stage.get("cmd", "")):
            continue
        for path, flags in _uncached_outputs(stage).items():
            assert flags.get("persist") is True, f"{name}: {path}"


def test_dvc_keeps_a_persist_output_when_its_stage_fails(tmp_path):
    import subprocess
    import sys

    dvc = [sys.executable, "-m", "dvc"]
    run = lambda *args: subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)  # noqa: E731
    run("git", "init", "-q")
    assert run(*dvc, "init", "-q").returncode == 0
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  kept:\n    cmd: exit 1\n    outs:\n      - kept.txt:\n          cache: false\n          persist: true\n"
        "  lost:\n    cmd: exit 1\n    outs:\n      - lost.txt:\n          cache: false\n"
    )
    for name in ("kept", "lost"):
        (tmp_path / f"{name}.txt").write_text("committed\n")
        assert run(*dvc, "repro", name).returncode != 0
    assert (tmp_path / "kept.txt").read_text() == "committed\n"
    assert not (tmp_path / "lost.txt").exists()  # what DVC does without persist: the deleted files


def _rewriter():
    """scripts/dvc_deps.py, loaded from its path (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("dvc_deps", ROOT / "scripts" / "dvc_deps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_rewriter_restores_a_stale_dvc_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """scripts/dvc_deps.py, after an import changes: a missing module and an extra one are put right, nothing else."""
    rewriter, committed = _rewriter(), (ROOT / "dvc.yaml").read_text()
    assert rewriter.main(["--check", "--dvc-yaml", str(ROOT / "dvc.yaml")]) == 0
    stale = tmp_path / "dvc.yaml"
    cam, cam_stats = "      - effnet/cam.py\n", "      - effnet/cam.py\n      - effnet/stats.py\n"
    text = committed.replace("      - effnet/io.py\n", "", 1).replace(cam, cam_stats)
    assert text != committed
    stale.write_text(text)
    assert rewriter.main(["--check", "--dvc-yaml", str(stale)]) == 1
    assert "download, cam" in capsys.readouterr().err
    assert rewriter.main(["--dvc-yaml", str(stale)]) == 0
    assert stale.read_text() == committed  # comments, anchors and layout kept
