"""The shape of the code: no import cycle in `effnet`, no DVC in the library, thin stage scripts.

The import graph counts every import: lazy ones inside functions and TYPE_CHECKING ones.

A cycle ties two modules into one for every purpose that follows imports: a DVC stage that
reads weights would depend on the trainer, and neither module can be read or tested alone.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the modules of `package` it imports anywhere in its source (parsed, not run)."""
    name = package.name
    modules = {f"{name}.{p.stem}" if p.stem != "__init__" else name: p for p in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from effnet import cli` imports the module effnet.cli; `from effnet.x import y`, effnet.x
                imported.add(node.module)
                imported |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[module] = {m for m in imported if m in modules and m != module}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return error.args[1]
    return None


def test_effnet_has_no_import_cycle():
    graph = import_graph(ROOT / "effnet")
    assert "effnet.train" in graph and "effnet.checkpoint" in graph["effnet.train"]  # the graph is really read
    assert cycle(graph) is None, f"import cycle: {' -> '.join(cycle(graph))}"


def test_weights_file_does_not_need_the_trainer():
    graph = import_graph(ROOT / "effnet")
    reached, todo = set(), ["effnet.weights", "effnet.evaluate", "effnet.cam"]
    while todo:
        module = todo.pop()
        reached.add(module)
        todo.extend(graph[module] - reached)
    assert not reached & {"effnet.train", "effnet.checkpoint"}


@pytest.mark.parametrize("guard", ["if TYPE_CHECKING:\n    ", "def f():\n    "])
def test_a_guarded_or_lazy_import_still_counts_as_a_cycle(tmp_path, guard):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("from pkg.b import B\n")
    (package / "b.py").write_text(f"from typing import TYPE_CHECKING\n{guard}from pkg import a\n")
    assert sorted(set(cycle(import_graph(package)))) == ["pkg.a", "pkg.b"]


def test_the_library_imports_nothing_of_dvc():
    """effnet runs on the bare GPU machine: DVC and DVCLive belong to the stage scripts."""
    for path in sorted((ROOT / "effnet").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not [n for n in names if n.split(".")[0] in ("dvc", "dvclive")], f"{path.name} imports {names}"


def test_stage_scripts_are_stage_scripts_of_at_most_60_lines():
    """stages/ holds one thin script per DVC stage: plumbing shared by several lives in effnet."""
    stages = sorted((ROOT / "stages").glob("*.py"))
    assert stages and all(len(p.read_text().splitlines()) <= 60 for p in stages), {
        p.name: len(p.read_text().splitlines()) for p in stages if len(p.read_text().splitlines()) > 60
    }
    for path in stages:
        assert "def main(" in path.read_text() and 'if __name__ == "__main__":' in path.read_text(), path.name


def test_no_file_edits_sys_path():
    # the package is installed (`-e .` in requirements.txt); a copy of the tree without it (the GPU machine) sets
    # PYTHONPATH instead, so that every process it starts imports the same `effnet`
    edits = [
        f"{p.relative_to(ROOT)}:{n}"
        for folder in ("effnet", "stages", "scripts", "tests", "benchmarks")
        for p in sorted((ROOT / folder).rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), start=1)
        if "sys.path.insert(" in line and "in line" not in line
    ]
    assert not edits, edits
