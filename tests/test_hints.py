"""Every `dvc ...` command shown to a user (error hints, usage lines, comments, README, docs/) parses with dvc's CLI.

The commands are collected from the string constants of every module in effnet/ and stages/
(f-string fields become a placeholder word) and from the comments of scripts/ and params.yaml;
each is handed to dvc's own argument parser, which rejects an unknown subcommand or option
(`dvc repro -S ...` was such a hint).
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# "dvc", a subcommand, then words up to the end of the command: a quote, backquote, bracket, comma,
# semicolon, " or " or the end of the line.
COMMAND = re.compile(r"(?<![\w./-])dvc (?:[a-z][\w-]*)(?: (?!or )[^\s`'\"(),;]+)*")
FIELD = "VALUE"  # what an f-string field {x} becomes
# "what `dvc plots` reads" names a command group, it asks the reader to run nothing
GROUPS = {"exp", "metrics", "params", "plots", "stage", "remote", "cache", "config", "data"}


def _python_strings(path: Path) -> list[str]:
    """The text of every string literal (docstrings too) of a Python file, f-string fields as FIELD."""
    texts = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.JoinedStr):
            texts.append("".join(v.value if isinstance(v, ast.Constant) else FIELD for v in node.values))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append(node.value)
    return texts


def _comments(path: Path) -> list[str]:
    return [line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line]


def _readme_commands(path: Path) -> list[str]:
    """The lines of a Markdown page's fenced code blocks that start with `dvc ` (its trailing comment removed)."""
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside and line.startswith("dvc "):
            lines.append(re.split(r"\s+#\s", line, maxsplit=1)[0].strip())
    return lines


def hints() -> list[tuple[str, str]]:
    """(where, command) of every dvc command written in the code, scripts and params.yaml."""
    found: list[tuple[str, str]] = []
    sources = [(p, _python_strings(p)) for d in ("effnet", "stages") for p in sorted((ROOT / d).glob("*.py"))]
    sources += [(p, _comments(p)) for p in sorted((ROOT / "scripts").glob("*")) if p.suffix in (".sh", ".yaml")]
    sources += [(ROOT / "params.yaml", _comments(ROOT / "params.yaml"))]
    pages = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted(ROOT.glob("*/README.md")),
        *sorted(ROOT.glob("vendor/*/README.md")),
    ]
    found += [
        (page.relative_to(ROOT).as_posix(), command) for page in pages for command in _readme_commands(page)
    ]  # whole lines, quotes and all
    for path, texts in sources:
        for text in texts:
            for match in COMMAND.finditer(text):
                command = match.group(0).rstrip(".:")
                if command.split()[1:] and not (len(command.split()) == 2 and command.split()[1] in GROUPS):
                    found.append((path.relative_to(ROOT).as_posix(), command))
    return found


def _dvc_parse(command: str) -> None:
    from dvc.cli import DvcParserError, parse_args

    try:
        parse_args(shlex.split(command)[1:])
    except (SystemExit, DvcParserError) as error:  # how dvc's argparse rejects a command line
        raise AssertionError(f"dvc rejects {command!r}") from error


def test_the_extractor_finds_the_known_hints() -> None:
    commands = {command for _, command in hints()}
    mirror = (
        "dvc exp run -S data.url=../shared/data/cifar-100-python.tar.gz -S data.md5=489088aff4823e5bdf2d51ec904dbfdb"
    )
    assert mirror in commands  # effnet/download.py's mirror hint
    assert "dvc repro download" in commands  # effnet/data.py
    assert f"dvc exp run -S data.url={FIELD} -S data.md5={FIELD}" in commands  # an f-string hint
    assert any(c.startswith("dvc exp show --no-pager --drop '.*' --keep") for c in commands)  # docs/, quoted regex
    assert "dvc repro --single-item collect plots report" in commands  # docs/operations.md
    assert len(commands) >= 10


@pytest.mark.parametrize(("where", "command"), hints())
def test_hint_is_a_valid_dvc_command(where: str, command: str) -> None:
    # prose that names an option ("as `dvc exp run -S` sets it") ends at the option: it must take a value there
    _dvc_parse(f"{command} {FIELD}=1" if command.split()[-1].startswith("-") else command)


def test_a_named_option_must_exist_on_its_command() -> None:
    _dvc_parse(f"dvc exp run -S {FIELD}=1")
    with pytest.raises(AssertionError, match="dvc rejects"):
        _dvc_parse(f"dvc repro -S {FIELD}=1")  # what `dvc repro -S` would have named: repro has no -S


def test_the_parser_rejects_a_wrong_hint() -> None:
    """The check can fail: the old hint of the download errors is rejected."""
    with pytest.raises(AssertionError, match="dvc rejects"):
        _dvc_parse("dvc repro -S data.url=/path/to/cifar-100-python.tar.gz -S data.md5=MD5")
    _dvc_parse("dvc exp run -S data.url=/path/to/cifar-100-python.tar.gz -S data.md5=MD5")
