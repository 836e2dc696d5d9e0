"""Write the offline HTML template of `dvc plots show` / `dvc plots diff`: Vega inlined, nothing from a CDN.

    python scripts/offline_plots.py DIR [--out vendor/vega/dvc_plots.html]

DIR holds the unpacked npm packages of vega 5, vega-lite 5 and vega-embed 6, made with
`npm pack vega@5 vega-lite@5 vega-embed@6` and `tar xzf` of each into DIR/<name>-<version>/.
DVC fills a template's `{plot_divs}` with the charts and its `{scripts}` with the three
`<script src="https://cdn.jsdelivr.net/...">` tags; this template has no `{scripts}`, so those
tags never reach the page, and the three minified builds (BSD-3-Clause, see
vendor/vega/LICENSE) are written into it instead. A page made from it opens offline,
wherever `-o` puts it. `.dvc/config` names it (`[plots] html_template`), so plain
`dvc plots show` and `dvc plots diff` use it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PACKAGES = (
    ("vega", "build/vega.min.js"),
    ("vega-lite", "build/vega-lite.min.js"),
    ("vega-embed", "build/vega-embed.min.js"),
)
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Offline template (scripts/offline_plots.py): {versions}, inlined; BSD-3-Clause,
         Copyright (c) 2015, University of Washington Interactive Data Lab (vendor/vega/LICENSE). -->
{inline}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def package_dir(root: Path, name: str) -> Path:
    """The unpacked package `name` under `root` (DIR/<name>-<version>/package)."""
    found = sorted(p for p in root.glob(f"{name}-[0-9]*/package") if (p / "package.json").is_file())
    if not found:
        raise SystemExit(
            f"error: no unpacked {name} under {root}: run `npm pack {name}` there and untar it into {name}-<version>/"
        )
    return found[-1]


def build(root: Path) -> str:
    """The template's text, from the packages unpacked under `root`."""
    versions, scripts = [], []
    for name, build_file in PACKAGES:
        package = package_dir(root, name)
        meta = json.loads((package / "package.json").read_text())
        if meta.get("license") != "BSD-3-Clause":
            raise SystemExit(
                f"error: {name} {meta.get('version')} is licensed {meta.get('license')!r}, not BSD-3-Clause"
            )
        code = (package / build_file).read_text(encoding="utf8")
        if "</script" in code.lower():  # would end the inline <script> early
            raise SystemExit(f"error: {package / build_file} contains '</script'; it cannot be inlined")
        versions.append(f"{name} {meta['version']}")
        scripts.append(f"    <script>/* {name} {meta['version']} */\n{code}\n    </script>")
    # The placeholders stay for DVC; the page's own braces are doubled for str.format.
    return PAGE.format(
        versions=", ".join(versions), inline="\n".join(scripts), refresh_tag="{refresh_tag}", plot_divs="{plot_divs}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", type=Path, help="directory with the unpacked npm packages")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "vendor/vega/dvc_plots.html")
    args = parser.parse_args(argv)
    text = build(args.packages)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf8")
    tmp.replace(args.out)
    print(f"wrote {args.out} ({len(text) / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
