"""One fingerprint for every cache of results: the settings that made them and the code that shaped them.

A resumable checkpoint or a finished search candidate is reused only when its fingerprint
matches. Settings alone are not enough: after an edit to the library, DVC re-runs the stage
(its `deps` changed) and the stage must then really retrain, not find the old code's
results under the same settings. So the fingerprint also hashes the source of every file of
this repository that the code in question imports, directly or not (`import_closure`).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the repository: effnet/ and stages/ lie here


def _module_file(name: str, root: Path) -> Path | None:
    """`effnet.train` -> root/effnet/train.py (or a package's __init__.py), None outside the repository."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_files(path: Path, root: Path) -> set[Path]:
    """Files of the repository that `path` imports (absolute imports, at any depth of the file)."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from effnet import train` imports the module effnet.train; `from effnet.x import y`, effnet.x
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # a package's __init__ runs too
                file = _module_file(".".join(parts[:i]), root)
                if file is not None:
                    found.add(file.resolve())
    return found


def import_closure(*paths: Path, root: Path = ROOT) -> list[Path]:
    """`paths` and every file of `root` they import, directly or through each other, sorted."""
    root = Path(root).resolve()
    todo = [Path(p).resolve() for p in paths]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(_imported_files(path, root) - seen)
    return sorted(seen)


def code_hash(*paths: Path, root: Path = ROOT) -> str:
    """A short hash of the source of `paths` and of everything of `root` they import."""
    digest = hashlib.sha256()
    root = Path(root).resolve()
    for path in import_closure(*paths, root=root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def _loaded_code_hash(paths: tuple[Path, ...]) -> str:
    """`code_hash(*paths)`, once per process: the code this process loaded, however often a run asks (every epoch's
    checkpoint), and unaffected by edits made on disk while it runs."""
    return code_hash(*paths)


def fingerprint(settings: Any, code: Iterable[Path] = ()) -> str:
    """A short hash of `settings` (anything JSON can write, with str() for the rest) and of the `code` it ran with."""
    paths = tuple(Path(p).resolve() for p in code)
    blob = json.dumps(
        {"settings": settings, "code": _loaded_code_hash(paths) if paths else ""}, sort_keys=True, default=str
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
