"""The HTML template of `dvc plots show` / `dvc plots diff` (vendor/vega/dvc_plots.html) needs no network.

No browser here: the page DVC writes from the template is checked for what a browser would
fetch (every <script src> and <link href> local, none http(s)) and for the three libraries
inlined. The render in headless Chromium with the network cut is described in vendor/vega/README.md.
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "vendor" / "vega" / "dvc_plots.html"
REMOTE = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.IGNORECASE)


def _configured_template() -> Path:
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    return (ROOT / ".dvc" / config["plots"]["html_template"]).resolve()  # DVC reads it relative to .dvc/


def _page(template: str, out: Path) -> str:
    from dvc_render import VegaRenderer
    from dvc_render.html import render_html

    datapoints = [{"step": 0, "top1": 0.1, "rev": "workspace"}, {"step": 1, "top1": 0.3, "rev": "workspace"}]
    renderer = VegaRenderer(datapoints, "val/top1", template="linear", x="step", y="top1")
    return render_html([renderer], output_file=out / "index.html", html_template=template).read_text()


def test_dvc_config_names_the_template() -> None:
    assert _configured_template() == TEMPLATE.resolve() and TEMPLATE.is_file()


def test_page_from_the_template_fetches_nothing_remote(tmp_path: Path) -> None:
    page = _page(str(TEMPLATE), tmp_path)
    assert not REMOTE.search(page), REMOTE.search(page)
    for library, marker in (("vega", ".vega={}"), ("vega-lite", ".vegaLite={}"), ("vega-embed", ".vegaEmbed=")):
        assert f"/* {library} 5" in page or f"/* {library} 6" in page, library
        assert marker in page, library
    assert "vegaEmbed(" in page and page.count("<script") >= 4  # the three libraries and the chart's own call


def test_the_check_catches_dvcs_default_cdn_page(tmp_path: Path) -> None:
    """DVC's own template loads Vega from a CDN: the check above would fail on it."""
    from dvc_render.html import PAGE_HTML

    assert REMOTE.search(_page(PAGE_HTML, tmp_path))


def test_script_names_the_missing_packages(tmp_path: Path) -> None:
    """scripts/offline_plots.py refuses a directory without the packages (and names them)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "offline_plots.py"), str(tmp_path), "--out", str(tmp_path / "t.html")],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "npm pack vega" in done.stderr and not (tmp_path / "t.html").exists()
