"""README.md and docs/: a front page under 15 KB, generated tables equal to what the report stage makes now,
links that resolve."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from test_report import project

from effnet.report import (
    BLOCK,
    GENERATORS,
    RunFiles,
    fill_blocks,
    generated_pages,
    read_run_files,
    run_params,
    update_pages,
)

ROOT = Path(__file__).resolve().parents[1]
README_LIMIT = 15_000  # bytes
# A table cell that is only a number (with a unit at most): a measurement, which has to be generated.
NUMBER_CELL = re.compile(r"^[-+~]?\d[\d,.]*\s*(%|x|s|min|h|M|G|MiB|GiB|px|images/s)?$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return generated_pages(ROOT)


def _without_generated_blocks_and_code(text: str) -> str:
    text = BLOCK.sub("", text)
    return re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_front_page_and_the_docs_are_there() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in pages()}
    assert {
        "README.md",
        "docs/findings.md",
        "docs/operations.md",
        "docs/gpu.md",
        "benchmarks/README.md",
        "vendor/vega/README.md",
    } <= names


def test_readme_is_under_15_kb() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size < README_LIMIT, f"README.md is {size:,} bytes; move detail to docs/ (limit {README_LIMIT:,})"


def test_readme_keeps_the_test_command_of_ci() -> None:
    assert "\npython -m pytest\n" in (ROOT / "README.md").read_text()
    assert "\npython -m pytest\n" in (ROOT / ".ci" / "run").read_text()


def test_generated_blocks_equal_what_the_report_stage_makes_now() -> None:
    """From the committed metrics/, plots/search.csv, dvc.lock and window files; no training, no torch."""
    files = read_run_files(ROOT)
    found = set()
    for page in pages():
        text = page.read_text()
        found |= {m["name"] for m in BLOCK.finditer(text)}
        assert fill_blocks(text, files, str(page)) == text, (
            f"{page.relative_to(ROOT)} is stale: run python stages/report.py --update-readme and commit"
        )
    assert found == set(GENERATORS)  # every generator is shown somewhere, so none of them goes unchecked
    assert "<!-- results:start -->" in (ROOT / "README.md").read_text()


def test_a_hand_edited_block_is_caught() -> None:
    files = read_run_files(ROOT)
    text = (ROOT / "README.md").read_text()
    edited = re.sub(r"(\| B0 \| )[\d.]+", r"\g<1>9.99", text, count=1)
    assert edited != text and fill_blocks(edited, files) == text


def test_no_table_of_numbers_is_typed_by_hand() -> None:
    typed = []
    for page in pages():
        for line in _without_generated_blocks_and_code(page.read_text()).splitlines():
            if line.startswith("|") and not set(line) <= set("|-: "):
                typed += [(page.name, line) for cell in line.strip("|").split("|") if NUMBER_CELL.match(cell.strip())]
    assert not typed, f"hand-typed numbers in tables (generate them in effnet/report.py): {typed[:3]}"


def test_the_number_check_can_fail() -> None:
    text = "| model | top-1 |\n|---|---|\n| B0 | 77.1 |\n"
    assert any(NUMBER_CELL.match(c.strip()) for c in text.splitlines()[2].strip("|").split("|"))
    assert _without_generated_blocks_and_code("<!-- run:start -->\n| B0 | 1 |\n<!-- run:end -->\n") == "\n"


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    for target in LINK.findall(_without_generated_blocks_and_code(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.relative_to(ROOT)}: link to {target}, no such file"
        if anchor:
            headings = {_slug(h) for h in re.findall(r"^#+ (.+)$", resolved.read_text(), flags=re.MULTILINE)}
            assert anchor in headings, f"{page.relative_to(ROOT)}: link to {target}, no such heading"


def test_run_params_are_the_locks_over_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n"
        "  a:\n    params:\n      params.yaml:\n        train.epochs: 1\n        train.gone_key: 3\n"
        "  b:\n    params:\n      params.yaml:\n        network:\n          base_resolution: 16\n"
    )
    params = run_params(tmp_path / "dvc.lock", tmp_path / "params.yaml")
    defaults = run_params(tmp_path / "missing.lock", tmp_path / "params.yaml")
    assert params.train.epochs == 1 and params.network.base_resolution == 16  # dotted keys and sections
    assert defaults.train.epochs != 1 and params.train.lr == defaults.train.lr  # the rest from params.yaml
    (tmp_path / "params-gpu.yaml").write_text("train:\n  epochs: 30\nnetwork.base_resolution: 32\n")  # overrides
    gpu = run_params(tmp_path / "params-gpu.yaml", tmp_path / "params.yaml")
    assert gpu.train.epochs == 30 and gpu.network.base_resolution == 32 and gpu.train.lr == defaults.train.lr
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValueError, match="neither a dvc.lock nor a params file"):
        run_params(tmp_path / "list.yaml", tmp_path / "params.yaml")


def test_unknown_or_unclosed_blocks_are_errors_and_nothing_is_written(tmp_path: Path) -> None:
    files = read_run_files(ROOT)
    with pytest.raises(ValueError, match="no generator for the block 'nonsense'"):
        fill_blocks("<!-- nonsense:start -->\n<!-- nonsense:end -->\n", files, "page.md")
    with pytest.raises(ValueError, match="has no <!-- run:end --> marker"):
        fill_blocks("<!-- run:start -->\n", files, "page.md")
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text("<!-- run:start -->\nold\n<!-- run:end -->\n")
    bad.write_text("<!-- nonsense:start -->\n<!-- nonsense:end -->\n")
    with pytest.raises(ValueError):
        update_pages([good, bad], files)
    assert good.read_text() == "<!-- run:start -->\nold\n<!-- run:end -->\n"
    assert update_pages([good], files) == [good] and "old" not in good.read_text()
    assert update_pages([good], files) == []  # idempotent


def test_the_stage_fills_the_readme_and_the_docs_beside_it(tmp_path: Path) -> None:
    project(tmp_path, plots=False)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "README.md").write_text("<!-- results:start -->\n<!-- results:end -->\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text("# x\n\n<!-- times:start -->\nhand-typed\n<!-- times:end -->\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "report.py"), "--update-readme"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "| DenseNet-201 |" in (tmp_path / "README.md").read_text()
    docs = (tmp_path / "docs" / "x.md").read_text()
    assert "hand-typed" not in docs and "| B7 |" in docs
    (tmp_path / "docs" / "x.md").write_text("<!-- nonsense:start -->\n<!-- nonsense:end -->\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "report.py"), "--update-readme"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "no generator for the block 'nonsense'" in done.stderr
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "report.py"), "--update-readme", "--run-params", "gone.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "--run-params gone.yaml: no such file" in done.stderr
    (tmp_path / "README.md").write_text("no markers\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "report.py"), "--update-readme"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "has no <!-- results:start --> ... <!-- results:end --> block" in done.stderr


def test_the_search_and_scaling_blocks_compute_what_they_say() -> None:
    committed = read_run_files(ROOT).params  # the small study's: published B1-B7, no search
    params = replace(
        committed,
        network=replace(committed.network, efficientnet_scaling="searched"),
        data=replace(committed.data, val_per_class=10),
    )  # a run with a search: 1,000 validation images
    candidates = [
        {
            "alpha": 1.0,
            "beta": 1.1,
            "gamma": 1.3,
            "val_top1": 0.1,
            "flops_ratio": 2.5,
            "train_time_s": 60,
            "paper": False,
            "chosen": False,
        },
        {
            "alpha": 1.2,
            "beta": 1.1,
            "gamma": 1.15,
            "val_top1": 0.3,
            "flops_ratio": 3.0,
            "train_time_s": 60,
            "paper": True,
            "chosen": True,
        },
    ]
    models = [
        {"model": "b0", "group": "scaling", "strategy": "baseline", "flops": 100, "target": ""},
        {"model": "d2", "group": "scaling", "strategy": "depth", "target": 2.0, "flops": 205, "depth": 1.75},
    ]
    files = RunFiles(params=params, models=models, search={}, candidates=candidates)
    search = GENERATORS["search"](files)
    assert search.startswith("2 candidates, at 2.50-3.00x B0's FLOPs, 2.0 min of training in all")
    assert "On 1,000 validation images the standard error of the best accuracy (30.0%) is 1.4 points" in search
    assert "the grid spans 20.0 points" in search
    rows = [line for line in search.splitlines() if line.startswith("| 1.")]
    assert rows[0].startswith("| 1.2 | 1.1 | 1.15 |") and rows[0].endswith("| chosen paper |")  # best first
    assert GENERATORS["search"](replace(files, params=committed)).endswith("runs no search.")
    scaling = GENERATORS["scaling"](files)
    assert "| 2x | depth | 1.750 |" in scaling and "| 2.050 |" in scaling  # FLOPs over the baseline's
