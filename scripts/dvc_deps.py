"""Rewrite the code deps of every dvc.yaml stage to its import closure, or check them: after an import changes.

    python scripts/dvc_deps.py [--check] [--dvc-yaml dvc.yaml]

A stage's code deps are its `stages/<script>.py` (from its cmd), every file of the repository that
the script imports, directly or not (`effnet.fingerprint.import_closure`, the closure the checkpoints
hash), and `study.yaml` where that closure holds `effnet/study.py`, which reads it. Empty package
markers are left out. The other deps (data, models, metrics, plan files) keep their place after the
code. DVC cannot interpolate a list into `deps`, so the lists are written out per stage; this script
keeps them right, and tests/test_dvc_deps.py checks them independently. Comments, anchors and the
layout of dvc.yaml are kept (ruamel.yaml's round trip).

--check writes nothing and exits 1, naming each stage whose code deps differ; otherwise the stages
that changed are rewritten and named. Run from the repository root with `effnet` importable
(`export PYTHONPATH=$PWD`, or the installed package).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from effnet.fingerprint import ROOT, import_closure

SCRIPT = re.compile(r"(?<![\w/.])stages[/.]\w+(?:\.py)?")  # stages/train.py (supervised) or -m stages.evaluate
STUDY_FILE, STUDY_MODULE = "study.yaml", "effnet/study.py"


def script_path(found: str) -> str:
    """'stages/train.py' or 'stages.evaluate' (a module run with -m) as the script's path: stages/evaluate.py."""
    return found if found.endswith(".py") else found.replace(".", "/") + ".py"


def is_code(dep: Any) -> bool:
    return isinstance(dep, str) and (dep.endswith(".py") or dep == STUDY_FILE)


def code_deps(cmd: str, root: Path = ROOT) -> list[str]:
    """The code deps of a stage whose command is `cmd`: its scripts, then effnet/ (study.yaml after study.py), then
    the other modules of the repository it imports, each group sorted."""
    scripts = [script_path(s) for s in SCRIPT.findall(cmd)]
    if not scripts:
        raise ValueError(f"no stages/<script>.py in the command {cmd!r}")
    closure = [p.relative_to(root).as_posix() for p in import_closure(*(root / s for s in scripts), root=root)]
    closure = [p for p in closure if not (p.endswith("__init__.py") and (root / p).read_text().strip() == "")]
    library = sorted(p for p in closure if p.startswith("effnet/"))
    if STUDY_MODULE in library:
        library.insert(library.index(STUDY_MODULE) + 1, STUDY_FILE)
    rest = sorted(p for p in closure if p not in scripts and not p.startswith("effnet/"))
    return [*dict.fromkeys(scripts), *library, *rest]


def updated(stages: dict[str, Any], root: Path = ROOT) -> list[str]:
    """Set each stage's code deps to `code_deps` in place, the other deps after them; the names of the changed."""
    changed = []
    for name, stage in stages.items():
        body = stage.get("do", stage)  # a foreach stage keeps its definition under `do`
        deps = body.get("deps")
        if deps is None:
            continue
        wanted = code_deps(body["cmd"], root) + [d for d in deps if not is_code(d)]
        if list(deps) != wanted:
            deps[:] = wanted  # the same list object: a YAML alias (`deps: *scaling_code`) follows
            changed.append(name)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a stage's code deps differ")
    parser.add_argument("--dvc-yaml", type=Path, default=ROOT / "dvc.yaml")
    args = parser.parse_args(argv)
    yaml = YAML()  # round trip: comments, anchors and flow lists as written
    yaml.preserve_quotes, yaml.width = True, 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    document = yaml.load(args.dvc_yaml.read_text())
    changed = updated(document["stages"])
    if args.check:
        if changed:
            print(
                f"{args.dvc_yaml}: the code deps of {', '.join(changed)} are not their import closure; "
                "run python scripts/dvc_deps.py",
                file=sys.stderr,
            )
            return 1
        print(f"{args.dvc_yaml}: every stage lists its import closure")
        return 0
    if changed:
        with args.dvc_yaml.open("w") as f:
            yaml.dump(document, f)
    print(
        f"{args.dvc_yaml}: rewrote the code deps of {', '.join(changed)}"
        if changed
        else f"{args.dvc_yaml}: every stage already lists its import closure"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
