"""REPORT.md, generated from the pipeline's outputs: how the run was made, what it found, how it compares.

Everything in the report comes from files the stages write (`metrics/models.csv`,
`metrics/search.json`, `plots/search.csv`, `metrics/cam.json`, the figures under `plots/`)
and from `params.yaml`; the only numbers typed in here are other people's: the paper's
ImageNet Table 2, the public CIFAR-100 results of the baselines, and the earlier student
reproduction. `results_block` is the short table the README shows between its
`<!-- results:start -->` and `<!-- results:end -->` markers, so the README's results are
the report's, never typed by hand; every other table of numbers in README.md and docs/ is
such a block too (`GENERATORS`, filled by `update_pages` from the committed `RunFiles`).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import itertools
import json
import math
import platform
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from effnet import study
from effnet.config import PAPER_COEFFICIENTS, Params, params_from_dict
from effnet.io import write_text
from effnet.plots import finite, label, read_table
from effnet.results import Predictions, load_predictions, predictions_path
from effnet.stats import (
    CONFIDENCE,
    RESAMPLES,
    Corrected,
    PairedComparison,
    bootstrap_differences,
    holm,
    paired_bootstrap,
)

STUDENT_RANGE = (67.9, 70.8)  # the earlier student reproduction: EfficientNet B0-B7 CIFAR-100 test top-1 (%)
REFERENCE_METHOD = "random"  # the floor of the faithfulness table (effnet.cam.REFERENCE_METHOD)
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
FIGURES = (
    ("accuracy_vs_params.png", "Test top-1 against parameters (paper Figure 1)"),
    ("accuracy_vs_flops.png", "Test top-1 against FLOPs (paper Figure 1, FLOPs)"),
    ("scaling.png", "Depth, width, resolution and compound scaling at matched FLOPs (paper Figures 3 and 8)"),
    ("search.png", "The grid search for (alpha, beta, gamma)"),
    ("val_vs_test.png", "Validation against test top-1"),
    ("training_curves.png", "Training curves of every run (DVCLive)"),
    ("cam_faithfulness.png", "Faithfulness of the class activation maps per scaling strategy"),
)


# --------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------


def pct(value: Any, digits: int = 2) -> str:
    """A fraction as a percentage ('77.10'), or an en dash when missing."""
    return f"{100 * value:.{digits}f}" if finite(value) else "–"


def num(value: Any, scale: float = 1.0, digits: int = 2) -> str:
    return f"{value / scale:,.{digits}f}" if finite(value) else "–"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table; `align` is one letter per column, l or r (default: first left, others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _g(value: Any) -> str:
    """A number in its shortest form ('3', '2.5'), or '?' when missing."""
    return f"{value:g}" if finite(value) else "?"


def _duration(seconds: Any) -> str:
    if not finite(seconds):
        return "–"
    return (
        f"{seconds / 3600:.1f} h"
        if seconds >= 3600
        else f"{seconds / 60:.1f} min"
        if seconds >= 60
        else f"{seconds:.0f} s"
    )


def _per_class(value: int, everything: str) -> str:
    return everything if value == 0 else f"{_count(value, 'image')} per class"


def _count(n: int, noun: str) -> str:
    """'1 epoch', '20 epochs'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------


def git_commit(root: Path) -> str:
    """`git rev-parse HEAD` in `root` (with '+ local changes' when the tree is dirty), or 'unknown'."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit.stdout.strip() + (" + local changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_name() -> str:
    """The processor's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_description() -> str:
    """Where the report was written: OS, Python, the installed PyTorch and the GPUs nvidia-smi lists.

    Without importing torch: the report stage runs on machines that have only the small files.
    """
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        listed = []
    gpus = [line.strip() for line in listed if line.strip()]
    devices = ", ".join(gpus) if gpus else "no GPU"
    return f"{platform.platform()}, {cpu_name()}, Python {platform.python_version()}, PyTorch {version}, {devices}"


def _read_json(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------


def _how(params: Params, models: list[dict[str, Any]], commit: str, host: str, now: str) -> str:
    devices = _devices(models)
    lines = [
        f"- **Date**: {now}. **Code**: git commit `{commit}`.",
        f"- **Evaluation hardware**: {', '.join(devices) or 'unknown'} (from `metrics/models.csv`). This report was "
        f"written on: {host}.",
    ]
    return "## How this run was made\n\n" + "\n".join(lines + budget_lines(params, models))


def budget_lines(params: Params, models: list[dict[str, Any]]) -> list[str]:
    """How the run of `params` was made, as Markdown bullets: data, networks, budgets, recipe, seeds, and
    whether the budget is a reduced one. No date, host or commit: the same files give the same lines."""
    t, s, sc, net, data, ev = params.train, params.search, params.scaling, params.network, params.data, params.evaluate
    # what the models record they were trained with (a run older than `train.seeds` records none: one each)
    ran = {int(r["seeds"]) for r in models if finite(r.get("seeds"))}
    seeds = max(ran) if ran else max(t.seeds, sc.seeds)
    images = {
        split: sorted({int(r[f"{split}/images"]) for r in models if finite(r.get(f"{split}/images"))})
        for split in ("val", "test")
    }
    evaluated = ", ".join(
        f"{split} {'/'.join(f'{n:,}' for n in counts)} images" for split, counts in images.items() if counts
    )
    scaling = (
        "the compound rule with the searched coefficients at phi = 0..7"
        if net.efficientnet_scaling == "searched"
        else "the published B1-B7 table"
    )
    lines = [
        f"- **Data**: CIFAR-100; {_count(data.val_per_class, 'image')} per class of the official training set "
        "held out for "
        f"validation (seed {data.seed}), the official test set for testing only"
        f"{f'; evaluated on {evaluated}' if evaluated else ''}"
        f"{f' (a seeded subset: evaluate.images_per_class = {ev.images_per_class})' if ev.images_per_class else ''}.",
        f"- **Networks**: regime `{net.regime}` (stems adapted to 32x32, total stride {net.cifar_downsample}), B0 at "
        f"{net.base_resolution}x{net.base_resolution}, B1-B7 by {scaling}; "
        f"the model at `model.phi` = {params.model.phi:g}.",
        f"- **Training budget**: the B0-B7 and baseline matrix {_count(t.epochs, 'epoch')} on "
        f"{_per_class(t.train_per_class, 'all 450 training images per class')}; "
        + (
            "no search (B1-B7 from the published table)"
            if net.efficientnet_scaling == "published"
            else f"the search {_count(s.epochs, 'epoch')} per candidate on "
            f"{_per_class(s.train_per_class, 'all images')}"
        )
        + f"; the scaling study {_count(sc.epochs, 'epoch')} on "
        f"{_per_class(sc.train_per_class, 'all images')}. The paper trains ImageNet for about 350 epochs.",
        f"- **Recipe**: {t.optimizer.upper()} (momentum {t.momentum:g}), lr {t.lr:g} per 256 images at batch "
        f"{t.batch_size}, {t.warmup_epochs:g} warmup epochs then cosine, weight decay {t.weight_decay:g}, "
        "label smoothing "
        f"{t.label_smoothing:g}, stochastic depth {t.drop_path_rate:g}, EMA decay {t.ema_decay:g}, crop + "
        f"{'flip' if t.hflip else 'no flip'}{f' + cutout {t.cutout}' if t.cutout else ''}, precision {t.precision}"
        f"{f', BatchNorm momentum {t.bn_momentum:g}' if t.bn_momentum is not None else ''}.",
        f"- **Seeds**: training {t.seed}"
        + (
            f" to {t.seed + seeds - 1} (up to {seeds} networks per model: `train.seeds` {t.seeds}, `scaling.seeds` "
            f"{sc.seeds}; accuracies are their means)"
            if seeds > 1
            else ""
        )
        + f", validation split {data.seed}, CAM images {params.cam.seed}.",
    ]
    reduced = _reduced(params)
    full_data = t.train_per_class == 0 and sc.train_per_class == 0 and ev.images_per_class == 0
    if reduced and full_data:  # every image, few epochs: the small study
        lines.append(
            f"- **A reduced scale** ({', '.join(reduced)}, on every training and test image): the models "
            "compare at this budget, far from convergence."
        )
    elif reduced:
        lines.append(
            f"- **A reduced budget** ({', '.join(reduced)}): these numbers show that the pipeline runs end to "
            "end, not how the models compare."
        )
    return lines


def _devices(models: list[dict[str, Any]]) -> list[str]:
    """The devices the models were evaluated on (the `device` column of metrics/models.csv)."""
    return sorted({str(r["device"]) for r in models if r.get("device")})


def _reduced(params: Params) -> list[str]:
    """What makes the budget of `params` smaller than a reproduction's, in words; [] when nothing does."""
    t, sc, ev = params.train, params.scaling, params.evaluate
    return [
        what
        for what, small in (
            (f"{_count(t.epochs, 'training epoch')}", t.epochs < 50),
            (f"{_count(t.train_per_class, 'training image')} per class", t.train_per_class > 0),
            (f"{_count(ev.images_per_class, 'evaluation image')} per class", ev.images_per_class > 0),
            (f"{_count(sc.epochs, 'scaling-study epoch')}", sc.epochs < 10),
        )
        if small
    ]


def run_summary(params: Params, models: list[dict[str, Any]], chains: Sequence[dict[str, Any]] = ()) -> str:
    """One paragraph on which run the README's results come from: device, budget, caveat (its date is in git).

    With `chains` (metrics/chains/*.json) the run is the small study, named as such with its code commits."""
    t, net, sc = params.train, params.network, params.scaling
    devices = _devices(models)
    reduced = _reduced(params)
    if chains:
        commits = sorted({str(c.get("commit", ""))[:10] for c in chains if c.get("exit_status") == 0})
        images = sorted({int(r["test/images"]) for r in models if finite(r.get("test/images"))})
        return (
            f"**This run: the small study** ([docs/small.md](docs/small.md), `scripts/small.yaml`): B0 at "
            f"{net.base_resolution}x{net.base_resolution}; Figure 1's models trained {_count(t.epochs, 'epoch')} "
            f"({_count(t.seeds, 'seed')} each), the scaling study {_count(sc.epochs, 'epoch')} "
            f"({_count(sc.seeds, 'seed')} each), on "
            f"{_per_class(t.train_per_class, 'all 45,000 training images')}; tested on "
            f"{'/'.join(f'{n:,}' for n in images) or 'no'} test images; trained and evaluated on "
            f"{', '.join(devices) or 'an unknown device'}, code commit{'s' if len(commits) != 1 else ''} "
            f"{', '.join(f'`{c}`' for c in commits) or '–'}. A reduced scale (the paper: ImageNet at 224-600 px "
            "for about 350 epochs): the models compare at this budget, far from convergence; models not trained "
            "yet say so."
        )
    return (
        f"**This run**: evaluated on {', '.join(devices) or 'an unknown device'}; B0 at "
        f"{net.base_resolution}x{net.base_resolution}, the B0-B7 and baseline matrix trained "
        f"{_count(t.epochs, 'epoch')} on {_per_class(t.train_per_class, 'all 450 training images per class')}."
        + (
            f" **A reduced budget** ({', '.join(reduced)}): the numbers below show that the pipeline runs "
            "end to end "
            "on the real data, not how the models compare."
            if reduced
            else ""
        )
    )


def search_scope(search: dict[str, Any], measured: dict[str, Any] | None = None) -> str:
    """A few Markdown lines: what the search can and cannot decide at which FLOPs target, from generated numbers.

    `search` is metrics/search.json (the decision at the search's own target and how distinct
    its networks are there); `measured` is scripts/search_targets.py's metrics/search_targets.json
    (the same count at several targets), when there is one. Empty without either.
    """
    rows = [{**r, "base_resolution": (measured or {}).get("base_resolution")} for r in (measured or {}).get("rows", [])]
    own = search.get("distinctness") if isinstance(search.get("distinctness"), dict) else None
    if own and not any(finite(r.get("target")) and abs(float(r["target"]) - float(own["target"])) < 1e-9 for r in rows):
        rows.append(own)
    lines = []
    for r in sorted(rows, key=lambda r: float(r["target"])):
        paper = "feasible" if r.get("paper_feasible") else "**not** feasible (nothing to compare against)"
        at = f" (B0 at {r['base_resolution']} px)" if r.get("base_resolution") else ""
        lines.append(
            f"- At {float(r['target']):g}x B0's FLOPs{at}: {r['feasible']} of {r['candidates']} "
            "grid points reach the "
            f"target, building {r['distinct']} distinct networks of which {r['material']} differ materially "
            f"(by >= 5% in built depth, width or resolution; the largest cluster of near-identical networks "
            f"holds {r['largest_cluster']} coefficient sets); "
            f"built depth {r['depth_min']:.2f}-{r['depth_max']:.2f}x, "
            f"width {r['width_min']:.2f}-{r['width_max']:.2f}x, resolution "
            f"{r['resolution_min']:.2f}-{r['resolution_max']:.2f}x; the paper's point is {paper}. "
            "Coefficient sets "
            "within one cluster cannot be told apart at any budget."
        )
    if "decision" in search:
        networks = [n for n in search.get("networks", []) if finite(n.get("detectable"))]
        low, high = (
            (min(n["detectable"] for n in networks), max(n["detectable"] for n in networks)) if networks else (0, 0)
        )
        spread = (
            f"{100 * low:.2f}" if round(100 * low, 2) == round(100 * high, 2) else f"{100 * low:.2f}-{100 * high:.2f}"
        )
        detectable = (
            f" Differences from the paper's network smaller than about {spread} points of validation top-1 "
            "(the half-width of each Holm-corrected interval) could not be detected at this budget."
            if networks
            else ""
        )
        taken = "a searched winner" if search["decision"] == "searched" else "the paper's coefficients"
        lines.append(
            f"- The search ran at {_g(search.get('flops_target'))}x with {search.get('seeds', '?')} "
            f"seed(s) per network and took {taken}, ({search.get('alpha')}, {search.get('beta')}, "
            f"{search.get('gamma')}): {search.get('reason', '')}.{detectable}"
        )
    return "\n".join(lines)


def _search(
    search: dict[str, Any], candidates: list[dict[str, Any]], params: Params, measured: dict[str, Any] | None = None
) -> str:
    out = ["## The compound coefficients (paper Section 3.3, step 1)"]
    if params.network.efficientnet_scaling == "published":
        return "\n\n".join(
            out
            + [
                "This run takes B1-B7 from the paper's published table "
                "(`network.efficientnet_scaling: published`) and runs no search; a "
                "`metrics/search.json` beside it is not this run's."
            ]
        )
    if not search:
        return "\n\n".join(out + ["No search result (`metrics/search.json`) yet."])
    paper = search.get("paper") if isinstance(search.get("paper"), dict) else {}
    a, b, g = PAPER_COEFFICIENTS
    taken = {"searched": "taken: the search's winner", "paper": "taken: the paper's, by the rule"}.get(
        search.get("decision"), "taken"
    )
    rows = [
        [
            taken,
            search.get("alpha", "–"),
            search.get("beta", "–"),
            search.get("gamma", "–"),
            num(search.get("constraint"), digits=3),
            num(search.get("flops_ratio"), digits=2),
            pct(search.get("val_top1")),
        ],
        [
            "paper",
            a,
            b,
            g,
            num(a * b * b * g * g, digits=3),
            num(paper.get("flops_ratio"), digits=2),
            pct(paper.get("val_top1")),
        ],
    ]
    out.append(
        table(
            [
                "",
                "alpha (depth)",
                "beta (width)",
                "gamma (resolution)",
                "alpha·beta²·gamma²",
                "FLOPs / B0 (as trained)",
                "val top-1 (%)",
            ],
            rows,
        )
    )
    n = len(candidates) or search.get("candidates", "?")
    seeds = search.get("seeds", 1)
    if "flops_target" not in search:  # a result of the search before it placed candidates at matched FLOPs
        out.append(
            f"{n} candidates, each B0 scaled at phi = 1 ({num(search.get('flops_ratio'), digits=2)}x B0's FLOPs "
            "for the one chosen): this result predates the search at matched FLOPs, with seeds and a decision "
            "rule; `dvc repro search` replaces it. Selected on "
            f"{search.get('selected_on', 'validation top-1')}; the test split plays no part."
        )
        return "\n\n".join(out)
    out.append(
        f"{n} candidates with |alpha·beta²·gamma² − 2| ≤ {params.search.tolerance:g} (the paper's point always "
        f"included), each placed at the phi where its real network costs {_g(search.get('flops_target'))}x "
        f"B0's FLOPs (within {search.get('flops_tolerance', 0):.0%}; {len(search.get('infeasible', []))} "
        f"infeasible, not trained); the {search.get('networks_trained', '?')} distinct networks they build are "
        f"trained {_count(params.search.epochs, 'epoch')} with {_count(seeds, 'seed')} each and scored on "
        f"{search.get('selected_on', 'validation top-1')}. The test split plays no part."
    )
    if "decision" in search:
        out.append(
            f"**Decision: {search['decision']}.** {search.get('reason', '')}. The rule: {search.get('rule', '')}"
        )
    trained = [c for c in candidates if c.get("status") == "trained" and finite(c.get("val_top1"))]
    if trained:

        def interval(low: Any, high: Any) -> str:
            return f"[{pct(low)}, {pct(high)}]" if finite(low) and finite(high) else "–"

        def difference(c: dict[str, Any]) -> str:
            if not finite(c.get("minus_paper")):
                return "–"
            return (
                f"{100 * c['minus_paper']:+.2f} [{100 * c['minus_paper_low']:+.2f}, {100 * c['minus_paper_high']:+.2f}]"
                if finite(c.get("minus_paper_low"))
                else f"{100 * c['minus_paper']:+.2f}"
            )

        same = {}
        for c in candidates:
            status = str(c.get("status", ""))
            if status.startswith("same network as "):
                same.setdefault(status.removeprefix("same network as "), []).append(
                    f"({c['alpha']:g}, {c['beta']:g}, {c['gamma']:g})"
                )
        ranked = sorted(trained, key=lambda c: -c["val_top1"])
        out.append(
            table(
                [
                    "alpha, beta, gamma",
                    "same network",
                    "depth",
                    "width",
                    "resolution",
                    "FLOPs / B0",
                    "val top-1 (%)",
                    "95% interval",
                    "− paper (points), Holm-corrected interval",
                    "verdict",
                ],
                [
                    [
                        f"({c['alpha']:g}, {c['beta']:g}, {c['gamma']:g})"
                        + (" chosen" if c.get("chosen") is True else ""),
                        ", ".join(same.get(f"a{c['alpha']:g}_b{c['beta']:g}_g{c['gamma']:g}", [])) or "–",
                        num(c.get("depth"), digits=2),
                        num(c.get("width"), digits=2),
                        num(c.get("resolution"), digits=2),
                        num(c.get("flops_ratio"), digits=2),
                        pct(c["val_top1"]),
                        interval(c.get("val_top1_low"), c.get("val_top1_high")),
                        difference(c),
                        c.get("verdict") or "–",
                    ]
                    for c in ranked
                ],
                "llrrrrrrrl",
            )
        )
    scope = search_scope(search, measured)
    if scope:
        out.append(
            "What the search can and cannot decide at which target (from `metrics/search.json` and "
            "`metrics/search_targets.json`, written by `scripts/search_targets.py`):\n\n" + scope
        )
    return "\n\n".join(out)


def _order(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rank = {name: i for i, name in enumerate(study.model_names())}
    groups = {"matrix": 0, "phi": 1, "scaling": 2, "other": 3}
    strategies = {s: i for i, s in enumerate(("baseline",) + study.strategy_names())}
    return sorted(
        models,
        key=lambda r: (
            groups.get(r.get("group"), 9),
            rank.get(r["model"], 99),
            strategies.get(r.get("strategy"), 9),
            r.get("target") or 0,
            str(r["model"]),
        ),
    )


def _results(models: list[dict[str, Any]]) -> str:
    by_name = {r["model"]: r for r in models}
    rows = []
    for r in _order(models) + [{"model": name, "missing": True} for name in study.model_names() if name not in by_name]:
        if r.get("missing"):
            rows.append([f"`{r['model']}`"] + ["not trained"] + ["–"] * 11)
            continue
        rows.append(
            [
                f"`{r['model']}`",
                r.get("group", ""),
                r.get("resolution", ""),
                num(r.get("params"), 1e6),
                num(r.get("flops"), 1e9, 3),
                pct(r.get("val/top1")),
                pct(r.get("val/top1_ema")),
                pct(r.get("test/top1")),
                pct(r.get("test/top1_ema")),
                pct(r.get("test/top1_ema_flip")),
                pct(r.get("test/top5_ema")),
                num(r.get("throughput_images_per_s"), digits=0),
                _duration(r.get("train_time_s")),
            ]
        )
    header = [
        "model",
        "group",
        "px",
        "params (M)",
        "FLOPs (G)",
        "val top-1",
        "val top-1 EMA",
        "test top-1",
        "test top-1 EMA",
        "test top-1 EMA + flip",
        "test top-5 EMA",
        "images/s",
        "train time",
    ]
    return (
        "## Results on CIFAR-100\n\n"
        "Accuracies in %, from `metrics/models.csv` (evaluate stage): raw and EMA weights, single crop; "
        '"+ flip" averages the softmax of each image and its mirror image. FLOPs are multiply-adds at the '
        "model's own input size, of convolutions and linear layers only, as the paper counts (`count_flops`), "
        "images/s is fp32 inference at `evaluate.batch_size`. Images/s and train time are of the machine "
        "that ran the model; the small study's models ran on different processors (named in "
        "docs/operations.md), so compare those columns only within one processor.\n\n"
        + table(header, rows, "llr" + "r" * 10)
    )


def _paper(models: list[dict[str, Any]]) -> str:
    by_name = {r["model"]: r for r in models}
    rows = []
    for entry in study.matrix():
        paper, ours = entry.paper, by_name.get(entry.name, {})
        rows.append(
            [
                entry.label,
                f"{paper.top1:.1f}" if paper else "–",
                paper.params if paper else "–",
                paper.flops if paper else "–",
                pct(ours.get("test/top1_ema")),
                num(ours.get("params"), 1e6, 1) + ("M" if ours else ""),
                num(ours.get("flops"), 1e9, 2) + ("B" if ours else ""),
                f"{entry.cifar_anchor:.1f}" if entry.cifar_anchor is not None else "–",
            ]
        )
    effnets = [
        by_name[m.name]
        for m in study.matrix()
        if not m.is_baseline and m.name in by_name and finite(by_name[m.name].get("test/top1_ema"))
    ]
    ours_range = (
        f"{pct(min(r['test/top1_ema'] for r in effnets), 1)}-{pct(max(r['test/top1_ema'] for r in effnets), 1)}%"
        if effnets
        else "not measured yet"
    )
    text = f"""## Against the paper and the earlier reproduction

The paper's Table 2 is ImageNet at 224-600 px; ours is CIFAR-100 at 32 px and up, so only the
shape of the curves can be compared, not the numbers. The public CIFAR-100 results of the
same baselines (CIFAR stems, 200 epochs; [{study.CIFAR_ANCHORS_SOURCE.removeprefix("https://github.com/")}]({
        study.CIFAR_ANCHORS_SOURCE
    }))
say what a full budget reaches on CIFAR-100.

{
        table(
            [
                "model",
                "ImageNet top-1 (paper)",
                "params (paper)",
                "FLOPs (paper)",
                "CIFAR-100 test top-1 EMA (here)",
                "params (here)",
                "FLOPs (here)",
                "CIFAR-100 anchor, 200 epochs",
            ],
            rows,
        )
    }

EfficientNet B0-B7 here: {ours_range} test top-1. The earlier student reproduction reported
{STUDENT_RANGE[0]}-{STUDENT_RANGE[1]}% for B0-B7 on CIFAR-100; its numbers are not comparable with
these, because:

- it trained the same unscaled network for every grid candidate, so its search compared
  nothing; here every candidate is B0 really scaled by its own (alpha, beta, gamma) (where:
  see the search section);
- it selected the coefficients on the test set; here on a validation split held out of the
  training set, and the test set is read first by the evaluate stage;
- its "validation" accuracy was measured on augmented images; here evaluation is on
  unaugmented images, every image once;
- it drew its class activation maps from untrained networks; here the maps come from the
  trained weights files;
- it fed ImageNet-stem baselines (stride-4 stem, 1x1 final maps) 32x32 images; here the
  baselines and the EfficientNets are adapted to 32x32 the same way (`network.regime: cifar`)."""
    return text


def _scaling(models: list[dict[str, Any]]) -> str:
    scaled = [r for r in models if r.get("group") == "scaling"]
    out = ["## Scaling one dimension against compound scaling (paper Figures 3 and 8)"]
    if not scaled:
        return "\n\n".join(out + ["No scaling-study models evaluated yet."])
    baseline = next((r for r in scaled if r.get("strategy") == "baseline"), None)
    strategies = study.strategy_names()
    targets = sorted(
        {float(r["target"]) for r in scaled if r.get("strategy") in strategies and finite(r.get("target"))}
    )
    rows = []
    for strategy in strategies:
        cells = []
        for target in targets:
            r = next(
                (
                    m
                    for m in scaled
                    if m.get("strategy") == strategy
                    and finite(m.get("target"))
                    and abs(float(m["target"]) - target) < 1e-9
                ),
                None,
            )
            ratio = f" ({r['flops'] / baseline['flops']:.2f}x)" if r and baseline and finite(r.get("flops")) else ""
            cells.append(f"{pct(r.get('test/top1_ema'))}{ratio}" if r else "–")
        rows.append([strategy] + cells)
    head = (
        f"B0 with the same budget: {pct(baseline.get('test/top1_ema'))}% test top-1 (EMA), "
        f"{num(baseline.get('flops'), 1e9, 3)} GFLOPs."
        if baseline
        else "The baseline B0 is missing."
    )
    out += [
        head + " Each cell: test top-1 (EMA, %) and the FLOPs reached, relative to B0.",
        table(["strategy"] + [f"{t:g}x FLOPs" for t in targets], rows),
    ]
    return "\n\n".join(out)


def comparisons(models: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(what is compared, model A, model B) for every paired comparison the report draws:

    - at each FLOPs target of the scaling study, compound scaling (A) against depth, width and
      resolution scaling (B), then each scaled model (A) against the unscaled B0 of the study (B):
      does scaling that dimension pay at all (the paper's Figure 3);
    - each EfficientNet of the matrix (A) against the next smaller one of the run (B): B1
      against B0, B2 against B1 (or B0 where B1 is not in the run), the steps of Figure 1's line;
    - each EfficientNet of the run (B0-B7, the phi model) (A) against the baseline nearest to it
      in FLOPs and the one nearest in parameters (B; one comparison when it is the same), nearest
      on a log scale.
    """
    out = []
    scaled = [r for r in models if r.get("group") == "scaling" and finite(r.get("target"))]
    strategies = study.strategy_names()
    unscaled = next((r["model"] for r in scaled if r.get("strategy") == study.SCALING_BASELINE.name), None)
    for target in sorted({float(r["target"]) for r in scaled if r.get("strategy") in strategies}):
        at = {r["strategy"]: r["model"] for r in scaled if abs(float(r["target"]) - target) < 1e-9}
        if "compound" in at:
            out += [(f"{target:g}x FLOPs", at["compound"], at[s]) for s in strategies if s != "compound" and s in at]
        if unscaled is not None:
            out += [(f"{target:g}x FLOPs against unscaled", at[s], unscaled) for s in strategies if s in at]
    baseline_names = {m.name for m in study.matrix() if m.is_baseline}
    effnet_names = {m.name for m in study.matrix() if not m.is_baseline}
    baselines = [r for r in models if r["model"] in baseline_names]
    line = [r["model"] for r in _order(models) if r["model"] in effnet_names]  # B0-B7 of the run, in order
    out += [("next smaller EfficientNet", a, b) for b, a in itertools.pairwise(line)]
    effnets = [r for r in _order(models) if r["model"] in effnet_names or r.get("group") == "phi"]
    for r in effnets:
        nearest: dict[str, list[str]] = {}
        for key, what in (("flops", "FLOPs"), ("params", "parameters")):
            candidates = [b for b in baselines if finite(b.get(key)) and b[key] > 0]
            if finite(r.get(key)) and r[key] > 0 and candidates:
                best = min(candidates, key=lambda b: abs(math.log(b[key] / r[key])))
                nearest.setdefault(best["model"], []).append(what)
        out += [(f"nearest in {' and '.join(whats)}", r["model"], b) for b, whats in nearest.items()]
    return out


NOT_DISTINGUISHABLE = "not distinguishable at this budget"


def _verdict(c: PairedComparison, corrected: Corrected, a: str, b: str) -> str:
    if not corrected.distinguishable:
        return NOT_DISTINGUISHABLE
    return f"{a} better" if c.difference > 0 else f"{b} better"


def _p(value: float) -> str:
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}" if value < 0.01 else f"{value:.3f}"


def paired_family(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[PairedComparison, Corrected]]:
    """Every comparison (A's and B's right/wrong flags) with its uncorrected result and its Holm correction
    over the whole family (`effnet.stats.holm`), in the order given."""
    results = [paired_bootstrap(a, b) for a, b in pairs]
    corrected = holm([bootstrap_differences(a, b) for a, b in pairs])  # the same seeded draws as paired_bootstrap
    return list(zip(results, corrected, strict=True))  # holm returns one Corrected per input, in order


def _paired(models: list[dict[str, Any]], predictions_dir: Path | None) -> str:
    out = ["## Paired comparisons on the same test images"]
    drawn = comparisons(models)
    if not drawn:
        return "\n\n".join(out + ["No comparisons to draw: the scaling study or the matrix is not evaluated yet."])
    labels = {r["model"]: label(r) for r in models}
    loaded: dict[str, Predictions | None] = {}

    def predictions(model: str) -> Predictions | None:
        if model not in loaded:
            path = predictions_path(predictions_dir, model) if predictions_dir is not None else None
            loaded[model] = load_predictions(path) if path is not None and path.is_file() else None
        return loaded[model]

    kept, notes = [], []
    for what, a, b in drawn:
        pa, pb = predictions(a), predictions(b)
        if pa is None or pb is None:
            continue
        if pa.test_set != pb.test_set:
            notes.append(
                f"{labels[a]} against {labels[b]}: evaluated on different test images "
                "(evaluate.images_per_class differs), not compared"
            )
            continue
        kept.append((what, a, b, pa.correct(ema=True), pb.correct(ema=True)))
    family = paired_family([(ca, cb) for *_, ca, cb in kept])
    rows = []
    for (what, a, b, _, _), (c, h) in zip(kept, family, strict=True):  # family is built from kept, one per item
        seeds = f"{c.seeds[0]}" if c.seeds[0] == c.seeds[1] else f"{c.seeds[0]} / {c.seeds[1]}"
        rows.append(
            [
                what,
                labels[a],
                labels[b],
                f"{c.images:,}",
                seeds,
                pct(c.accuracy_a),
                pct(c.accuracy_b),
                f"{100 * c.difference:+.2f}",
                f"[{100 * h.low:+.2f}, {100 * h.high:+.2f}]",
                f"{100 * h.confidence:.2f}%",
                _p(h.p_holm),
                f"{100 * h.detectable:.2f}",
                _verdict(c, h, labels[a], labels[b]),
            ]
        )
    missing = sorted({m for _, a, b in drawn for m in (a, b) if predictions(m) is None})
    if missing:
        notes.append(
            "No per-image predictions (`predictions/<model>.npz`) for "
            f"{', '.join(f'`{m}`' for m in missing)}: "
            "their comparisons are left out (not evaluated yet, or evaluated before the evaluate stages saved "
            "predictions: run the model's evaluate stage where its weights are, e.g. "
            "`dvc repro evaluate@efficientnet_b0`)."
        )
    one_seed = [r for r, (c, _) in zip(rows, family, strict=True) if c.seeds == (1, 1)]  # one row per family item
    out.append(
        f"A − B in percentage points of test top-1 (EMA weights where the run kept them). Each comparison's "
        f"distribution comes from a paired bootstrap ({RESAMPLES:,} resamples, seeded): each resample draws the "
        "test images with replacement, the same draw for both models, and the seeds (`train.seeds`, "
        "`scaling.seeds`) with replacement, so the interval covers the finite test set and the seed-to-seed "
        "variation of training. "
        f"**Corrected for multiplicity**: the {len(rows)} comparisons of this table are one family, "
        "corrected by "
        f"Holm's step-down procedure at a family-wise {100 * CONFIDENCE:.0f}% (`effnet.stats.holm`): each "
        "interval is at the corrected confidence shown, Holm p is the Holm-adjusted bootstrap p-value, and a "
        "comparison is told apart only where its corrected interval excludes 0; elsewhere the table says "
        f'**{NOT_DISTINGUISHABLE}**. "detectable" is the half-width of the corrected interval: the smallest '
        "difference (points) this run could have told from 0 in that comparison. McNemar's test is not used: "
        "with several seeds per model it would test one network of each and ignore the seed-to-seed noise. "
        "Compared: compound scaling against each single dimension at each FLOPs target, each scaled model "
        "against the unscaled B0 of the scaling study, each EfficientNet against the next smaller one of the "
        "run, and each EfficientNet against the baseline nearest to it in FLOPs and in parameters."
        + (
            f" {len(one_seed)} of the comparisons have one seed per model: their intervals cover the test "
            "images only, not the seed-to-seed variation (set `train.seeds`, `scaling.seeds` >= 3)."
            if one_seed
            else ""
        )
    )
    if rows:
        out.append(
            table(
                [
                    "compared",
                    "A",
                    "B",
                    "test images",
                    "seeds",
                    "A top-1",
                    "B top-1",
                    "A − B",
                    "corrected interval",
                    "confidence",
                    "Holm p",
                    "detectable",
                    "verdict",
                ],
                rows,
                "lll" + "r" * 9 + "l",
            )
        )
        undecided = [h.detectable for _, h in family if not h.distinguishable]
        if undecided:
            spread = (
                f"{100 * undecided[0]:.2f}"
                if min(undecided) == max(undecided)
                else f"from {100 * min(undecided):.2f} to {100 * max(undecided):.2f}"
            )
            out.append(
                f"{len(undecided)} of {len(rows)} comparisons are {NOT_DISTINGUISHABLE}; the smallest "
                f"difference they could have detected (the half-width of the corrected interval) is {spread} "
                "points of test top-1."
            )
    out += notes
    return "\n\n".join(out)


def _cam(cam: dict[str, Any], methods: Sequence[str], plots_dir: Path, report_dir: Path) -> str:
    out = ["## Class activation maps (paper Figure 7) and their faithfulness"]
    figures = [
        f"![{m}]({_relative(plots_dir / 'cam' / f'{m}.png', report_dir)})"
        for m in methods
        if (plots_dir / "cam" / f"{m}.png").is_file()
    ]
    out.append(
        "Maps of the true class from the trained (EMA) weights, at the last convolutional stage, of B0 and "
        "the models of the scaling study at `cam.flops_target` x its FLOPs (`plots/cam/<method>.png`)."
    )
    out += figures
    if not cam:
        return "\n\n".join(out + ["No faithfulness results (`metrics/cam.json`) yet."])
    shown = [m for m in methods] + [REFERENCE_METHOD]
    rows = []
    for model, entry in cam.items():
        if not isinstance(entry, dict):
            continue
        cells = []
        for method in shown:
            m = entry.get(method, {})
            cells.append(
                f"{num(m.get('road_combined'), digits=4)} ({num(m.get('road_morf'), digits=3)} / "
                f"{num(m.get('road_lerf'), digits=3)})"
                if m
                else "–"
            )
        rows.append(
            [model, entry.get("strategy", ""), num(entry.get("flops_ratio"), digits=2), pct(entry.get("top1"), 1)]
            + cells
        )
    images = next((e.get("images") for e in cam.values() if isinstance(e, dict) and e.get("images")), "?")
    out.append(
        f"ROAD (Remove And Debias) on {images} seeded test images per model: the change of the true class's "
        "probability when the most (MoRF) or least (LeRF) relevant pixels are replaced by an interpolation of "
        "their neighbours, averaged over 20-80% removed; each cell is combined = (LeRF − MoRF) / 2 (higher: "
        f"more faithful) with (MoRF / LeRF). `{REFERENCE_METHOD}` weighs the activations at random: the floor "
        "a method has to beat. Top-1 is on the same images."
    )
    out.append(
        table(["model", "strategy", "FLOPs / B0", "top-1 (%)"] + [f"{m}: combined (MoRF / LeRF)" for m in shown], rows)
    )
    return "\n\n".join(out)


def _relative(path: Path, start: Path) -> str:
    import os

    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def _figures(plots_dir: Path, report_dir: Path) -> str:
    lines = ["## Figures"]
    for name, caption in FIGURES:
        path = plots_dir / name
        if path.is_file():
            lines.append(f"**{caption}** (`plots/{name}`)\n\n![{caption}]({_relative(path, report_dir)})")
        else:
            lines.append(f"**{caption}**: not drawn (`plots/{name}` missing).")
    return "\n\n".join(lines)


def results_block(
    models: list[dict[str, Any]],
    search: dict[str, Any],
    report_name: str = "REPORT.md",
    run: str = "",
    published: bool = False,
) -> str:
    """The README's results: B0-B7, the baselines and the phi model, with the paper's ImageNet top-1 beside;
    `run` (see `run_summary`) first when given; `published`: B1-B7 are the paper's table, no search decided them."""
    by_name = {r["model"]: r for r in models}
    rows = []
    for entry in study.matrix() + (study.phi_model(),):
        name, r = entry.name, by_name.get(entry.name)
        if r is None and entry.group == "phi":
            continue
        paper = f"{entry.paper.top1:.1f}" if entry.paper else "–"
        if r is None:
            rows.append([label({"model": name}), "not trained", "–", "–", "–", paper])
            continue
        rows.append(
            [
                label(r),
                num(r.get("params"), 1e6),
                num(r.get("flops"), 1e9, 3),
                pct(r.get("test/top1_ema")),
                pct(r.get("test/top5_ema")),
                paper,
            ]
        )
    coefficients = (
        f"Searched coefficients: alpha = {search['alpha']}, beta = {search['beta']}, "
        f"gamma = {search['gamma']} "
        f"(paper: {', '.join(f'{c:g}' for c in PAPER_COEFFICIENTS)}). "
        if all(k in search for k in ("alpha", "beta", "gamma"))
        else ""
    )
    if search.get("decision") == "paper":  # the search could not beat the paper's point: say so, not "searched"
        coefficients = (
            f"Coefficients: the paper's ({', '.join(f'{c:g}' for c in PAPER_COEFFICIENTS)}); the search "
            "found no network that beats them (see the report). "
        )
    if published:
        coefficients = "B1-B7 are the paper's published table (`network.efficientnet_scaling: published`): no search. "
    ema = any(r.get("has_ema") is True for r in models)
    weights = "the EMA weights" if ema or not models else "the raw weights (this run kept no EMA)"
    return (
        (f"{run}\n\n" if run else "")
        + f"{coefficients}CIFAR-100 test accuracy (%) with {weights}; the last column is the paper's "
        f"ImageNet top-1, for the shape of the curve only. Generated from `metrics/` by the report stage; "
        f"details, the scaling study and the class activation maps in [{report_name}]({report_name}).\n\n"
        + table(["model", "params (M)", "FLOPs (G)", "test top-1", "test top-5", "ImageNet top-1 (paper)"], rows)
    )


def build_report(
    params: Params,
    *,
    models_table: Path,
    search_json: Path,
    search_table: Path,
    cam_json: Path,
    plots_dir: Path,
    report_dir: Path,
    commit: str,
    host: str | None = None,
    now: str | None = None,
    predictions_dir: Path | None = None,
) -> str:
    """The whole REPORT.md as text. Missing inputs are said to be missing; nothing fails on them.

    Beside `search_json` it reads `search_targets.json` (scripts/search_targets.py) when present.

    `predictions_dir` holds the evaluate stages' `<model>.npz` for the paired comparisons.
    """
    models = [r for r in read_table(models_table) if r.get("model")]
    search = _read_json(search_json)
    candidates = read_table(search_table)
    cam = _read_json(cam_json)
    now = now or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        "# EfficientNet compound scaling on CIFAR-100: report",
        "_Generated by `stages/report.py` from `metrics/`, `plots/` and `params.yaml`; do not edit by hand._",
        _how(params, models, commit, host or host_description(), now),
        "## Summary\n\n" + results_block(models, search, published=params.network.efficientnet_scaling == "published"),
        _search(search, candidates, params, _read_json(Path(search_json).with_name("search_targets.json"))),
        _results(models),
        _paper(models),
        _scaling(models),
        _paired(models, Path(predictions_dir) if predictions_dir is not None else None),
        _cam(cam, params.cam.methods, Path(plots_dir), Path(report_dir)),
        _figures(Path(plots_dir), Path(report_dir)),
    ]
    return "\n\n".join(sections) + "\n"


# --------------------------------------------------------------------------------------
# the generated blocks of README.md and docs/*.md
# --------------------------------------------------------------------------------------

# `<!-- NAME:start -->` ... `<!-- NAME:end -->`: what lies between is written by `fill_blocks`, never by hand.
BLOCK = re.compile(r"<!-- (?P<name>[a-z][a-z0-9-]*):start -->\n?(?P<body>.*?)<!-- (?P=name):end -->", re.DOTALL)
GPU_WINDOWS = "scripts/gpu_window*.yaml"


@dataclass(frozen=True)
class RunFiles:
    """The committed files the generated blocks are made from: the same files give the same blocks."""

    params: Params  # what the committed run was made with (`run_params`), not params.yaml's defaults
    models: list[dict[str, Any]]  # metrics/models.csv
    search: dict[str, Any]  # metrics/search.json
    candidates: list[dict[str, Any]]  # plots/search.csv
    windows: tuple[tuple[str, dict[str, Any]], ...] = ()  # (path, content) of each GPU window file
    search_targets: dict[str, Any] | None = None  # metrics/search_targets.json (scripts/search_targets.py)
    cpu_bench: dict[str, Any] | None = None  # benchmarks/bench_cpu.json (benchmarks/bench_cpu.py --json)
    tradeoff: dict[str, Any] | None = None  # benchmarks/small_tradeoff.json (scripts/small_tradeoff.py)
    chains: tuple[dict[str, Any], ...] = ()  # metrics/chains/*.json (scripts/chain.sh), by name
    cuts: dict[str, Any] | None = None  # benchmarks/small_cuts.json (scripts/small_cuts.py)
    cpu_parity: tuple[dict[str, Any], ...] = ()  # benchmarks/bench_cpu_parity*.json: longer bf16 parity checks


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _overlay(base: dict[str, Any], over: dict[str, Any]) -> None:
    """Copy `over`'s leaves into `base` where `base` has that key (a key the config no longer has is left out)."""
    for key, value in over.items():
        if key not in base:
            continue
        if isinstance(value, dict) and isinstance(base[key], dict):
            _overlay(base[key], value)
        else:
            base[key] = value


def run_params(source: Path, defaults: Path = Path("params.yaml")) -> Params:
    """The params the committed run was made with, as `source` records them, over `defaults`.

    `source` is a dvc.lock (every `params.yaml` value any of its stages records, as a section or a
    dotted key) or a params file of overrides, such as a GPU archive's `params-gpu.yaml`. Keys it does
    not hold (added since that run) keep `defaults`' values; a key that `defaults` no longer has is
    dropped, as nothing reads it. A missing `source` gives `defaults` alone.
    """
    raw = yaml.safe_load(Path(defaults).read_text())
    source = Path(source)
    if source.is_file():
        loaded = yaml.safe_load(source.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{source}: neither a dvc.lock nor a params file (a mapping of keys)")
        entries = (
            [(stage.get("params") or {}).get("params.yaml") or {} for stage in loaded["stages"].values()]
            if isinstance(loaded.get("stages"), dict)
            else [loaded]
        )
        recorded: dict[str, Any] = {}
        for entry in entries:
            for key, value in entry.items():
                _set(recorded, key, value)
        _overlay(raw, recorded)
        targets, cam = raw["scaling"]["flops_targets"], raw["cam"]
        if "cam" not in recorded and cam["flops_target"] not in targets:  # no cam stage ran: the run's own target
            cam["flops_target"] = targets[0]
    return params_from_dict(raw)


def read_run_files(
    root: Path,
    *,
    run: Path | None = None,
    defaults: Path | None = None,
    models_table: Path | None = None,
    search_json: Path | None = None,
    search_table: Path | None = None,
) -> RunFiles:
    """`RunFiles` of the project at `root`; each file at its pipeline path under `root` unless given:
    the params of `run` (dvc.lock; see `run_params`) over `defaults` (params.yaml), metrics/models.csv,
    metrics/search.json, plots/search.csv, and the GPU window files."""
    root = Path(root)
    windows = tuple(
        (p.relative_to(root).as_posix(), yaml.safe_load(p.read_text()) or {}) for p in sorted(root.glob(GPU_WINDOWS))
    )
    models = read_table(models_table or root / "metrics" / "models.csv")
    bench = root / "benchmarks"
    return RunFiles(
        params=run_params(run or root / "dvc.lock", defaults or root / "params.yaml"),
        models=[r for r in models if r.get("model")],
        search=_read_json(search_json or root / "metrics" / "search.json"),
        candidates=read_table(search_table or root / "plots" / "search.csv"),
        windows=windows,
        search_targets=_read_json(root / "metrics" / "search_targets.json") or None,
        cpu_bench=_read_json(bench / "bench_cpu.json") or None,
        tradeoff=_read_json(bench / "small_tradeoff.json") or None,
        cuts=_read_json(bench / "small_cuts.json") or None,
        cpu_parity=tuple(_read_json(p) for p in sorted(bench.glob("bench_cpu_parity*.json"))),
        chains=tuple(_read_json(p) for p in sorted((root / "metrics" / "chains").glob("*.json"))),
    )


def run_block(files: RunFiles) -> str:
    """How the committed run was made (docs/findings.md): the report's bullets, without date, host or commit."""
    return "\n".join(budget_lines(files.params, files.models))


def search_block(files: RunFiles) -> str:
    """Every candidate of the committed search (plots/search.csv), best validation top-1 first."""
    if files.params.network.efficientnet_scaling == "published":
        return "This run takes B1-B7 from the paper's published table and runs no search."
    ranked = sorted(files.candidates, key=lambda c: -c["val_top1"] if finite(c.get("val_top1")) else math.inf)
    if not ranked:
        return "No search candidates (`plots/search.csv`) committed."
    has_phi = any(finite(c.get("phi")) for c in ranked)
    rows = [
        [c.get("alpha", "–"), c.get("beta", "–"), c.get("gamma", "–"), num(c.get("constraint"), digits=3)]
        + ([num(c.get("phi"), digits=3)] if has_phi else [])
        + [
            c.get("resolution", "–"),
            num(c.get("params"), 1e6),
            num(c.get("flops_ratio"), digits=2),
            pct(c.get("val_top1"), 1),
            num(c.get("train_time_s"), digits=0),
            " ".join(k for k in ("chosen", "paper") if c.get(k) is True),
        ]
        for c in ranked
    ]
    header = (
        ["alpha", "beta", "gamma", "alpha·beta²·gamma²"]
        + (["phi"] if has_phi else [])
        + ["px", "params (M)", "FLOPs / B0", "val top-1 (%)", "train (s)", ""]
    )
    spent = sum(c["train_time_s"] for c in ranked if finite(c.get("train_time_s")))
    ratios = [c["flops_ratio"] for c in ranked if finite(c.get("flops_ratio"))]
    span = f", at {min(ratios):.2f}-{max(ratios):.2f}x B0's FLOPs" if ratios else ""
    scores = [c["val_top1"] for c in ranked if finite(c.get("val_top1"))]
    images = files.params.data.val_per_class * files.params.network.num_classes
    noise = (
        f" On {images:,} validation images the standard error of the best accuracy ({100 * scores[0]:.1f}%) is "
        f"{100 * math.sqrt(scores[0] * (1 - scores[0]) / images):.1f} points; the grid spans "
        f"{100 * (scores[0] - scores[-1]):.1f} points."
        if scores and images
        else ""
    )
    return (
        f"{_count(len(ranked), 'candidate')}{span}, {_duration(spent)} of training in all "
        f"(`plots/search.csv`, `metrics/search.json`).{noise}\n\n" + table(header, rows, "r" * (len(header) - 1) + "l")
    )


def scaling_block(files: RunFiles) -> str:
    """The scaling study's models of the committed run (metrics/models.csv) as built: multipliers, FLOPs, top-1."""
    scaled = [r for r in _order(files.models) if r.get("group") == "scaling"]
    if not scaled:
        return "No scaling-study models in `metrics/models.csv`."
    base = next((r for r in scaled if r.get("strategy") == "baseline"), None)
    rows = [
        [
            f"{r['target']:g}x" if finite(r.get("target")) else "1x",
            r.get("strategy", ""),
            num(r.get("depth"), digits=3),
            num(r.get("width"), digits=3),
            r.get("resolution", "–"),
            num(r.get("params"), 1e6),
            num(r["flops"] / base["flops"], digits=3) if base and finite(r.get("flops")) else "–",
            pct(r.get("test/top1_ema")),
        ]
        for r in scaled
    ]
    return table(
        ["target", "strategy", "depth", "width", "px", "params (M)", "FLOPs / B0", "test top-1"], rows, "ll" + "r" * 6
    )


def times_block(files: RunFiles) -> str:
    """What each model of the committed run cost to train and evaluate (metrics/models.csv), with the processor
    of its small-study chain (metrics/chains/<model>.json) where it has one: chains ran on different machines."""
    cpus = {c.get("chain"): c.get("cpu", "not recorded") for c in files.chains}
    rows = [
        [
            label(r),
            r.get("resolution", "–"),
            r.get("epochs", "–"),
            _duration(r.get("train_time_s")),
            num(r.get("throughput_images_per_s"), digits=0),
            r.get("device", "–"),
            cpus.get(r.get("model"), "–"),
        ]
        for r in _order(files.models)
        if r.get("group") in ("matrix", "phi")
    ]
    if not rows:
        return "No models in `metrics/models.csv`."
    return table(["model", "px", "epochs", "train time", "inference images/s", "device", "processor"], rows, "lrrrrll")


def windows_block(files: RunFiles) -> str:
    """The GPU windows (scripts/gpu_window*.yaml): their jobs, budget and estimated seconds per epoch."""
    rows = []
    for path, window in files.windows:
        estimates = window.get("estimates") or {}
        stages = [
            str(s.get("name") or f"the {s.get('study')} study")
            for s in window.get("stages") or []
            if isinstance(s, dict)
        ]
        shown = f"{', '.join(stages[:3])}{', ...' if len(stages) > 3 else ''} ({_count(len(stages), 'stage')})"
        jobs = list(window.get("models") or []) + ([shown] if stages else [])
        budget = ", ".join(f"`{k}: {v}`" for k, v in (window.get("params") or {}).items()) or "–"
        guess = ", ".join(f"{k} {'-'.join(str(x) for x in v)}" for k, v in estimates.items()) or "–"
        rows.append([f"`{path}`", ", ".join(jobs) or "–", "yes" if window.get("bench") else "no", budget, guess])
    if not rows:
        return "No GPU window files (`scripts/gpu_window*.yaml`)."
    return table(["window file", "jobs", "benchmark", "budget", "estimated s per epoch (not measured)"], rows, "lllll")


# Bytes of a trainer checkpoint per parameter (weights, EMA, momentum, BatchNorm statistics, RNG states),
# measured with `effnet.checkpoint.save_checkpoint` after one training step on the CPU: B0 for the
# EfficientNets, ResNet-50 for the baselines; fp32 as saved, bf16 as `shrink_checkpoint` writes it.
CHECKPOINT_BYTES_PER_PARAM = {"efficientnet": {"fp32": 12.17, "bf16": 6.11}, "baseline": {"fp32": 12.03, "bf16": 6.02}}
LEASE_CARRY_MIB = 56  # what one call brings back and one carry takes beside the tree (docs/lease.md)
RETURN_FILE_MIB = 16  # the largest file a device call returns


def search_scope_table(search: dict[str, Any], measured: dict[str, Any] | None) -> str:
    """`search_scope`'s measurement as one compact table (the README's): per FLOPs target, what the grid builds."""
    rows = sorted((measured or {}).get("rows", []), key=lambda r: float(r["target"]))
    if not rows:
        return "No measurement of the grid (`metrics/search_targets.json`, `python scripts/search_targets.py`)."
    at = f", B0 at {measured['base_resolution']} px" if measured.get("base_resolution") else ""
    searched = search.get("flops_target")
    body = table(
        [
            "FLOPs target",
            "points placed",
            "distinct networks",
            "materially distinct (>= 5%)",
            "largest near-identical cluster",
            "paper's point",
        ],
        [
            [
                f"{float(r['target']):g}x" + (" (searched)" if _same(r["target"], searched) else ""),
                f"{r['feasible']} of {r['candidates']}",
                r["distinct"],
                r["material"],
                r["largest_cluster"],
                "placed" if r.get("paper_feasible") else "cannot be placed",
            ]
            for r in rows
        ],
        "lrrrrl",
    )
    return f"Measured{at} (`metrics/search_targets.json`):\n\n{body}"


def _same(a: Any, b: Any) -> bool:
    return finite(a) and finite(b) and abs(float(a) - float(b)) < 1e-9


def checkpoints_block(files: RunFiles) -> str:
    """Each matrix model's checkpoint size in fp32 and bf16, from its parameter count in metrics/models.csv."""
    rows = []
    for r in _order(files.models):
        if r.get("group") != "matrix" or not finite(r.get("params")):
            continue
        rates = CHECKPOINT_BYTES_PER_PARAM["efficientnet" if r.get("arch") == "efficientnet" else "baseline"]
        mib = {kind: r["params"] * rate / 2**20 for kind, rate in rates.items()}
        rows.append(
            [
                label(r),
                num(r["params"], 1e6),
                num(mib["fp32"]),
                "yes" if mib["fp32"] <= LEASE_CARRY_MIB else "no",
                num(mib["bf16"]),
                "yes" if mib["bf16"] <= LEASE_CARRY_MIB else "no",
                str(math.ceil(mib["bf16"] / RETURN_FILE_MIB)),
            ]
        )
    if not rows:
        return "No matrix models in `metrics/models.csv`."
    return table(
        [
            "model",
            "params (M)",
            "fp32 (MiB)",
            "spans leases",
            "bf16 (MiB)",
            "spans leases in bf16",
            f"{RETURN_FILE_MIB} MiB files (bf16)",
        ],
        rows,
        "lrrlrlr",
    )


def cpu_bench_block(files: RunFiles) -> str:
    """The CPU benchmark's rows (benchmarks/bench_cpu.json): each set-up's step time against the plain fp32 loop."""
    bench = files.cpu_bench or {}
    if not bench.get("rows"):
        return "No CPU benchmark committed (`python benchmarks/bench_cpu.py --json benchmarks/bench_cpu.json`)."
    rows = [
        [
            r["network"] or "",
            r["setup"],
            num(r["ms_per_step"], digits=0),
            num(r["images_per_s"], digits=1),
            f"{r['vs_plain']:.2f}x",
        ]
        for r in bench["rows"]
    ]
    for i in range(len(rows) - 1, 0, -1):  # the network once, on its first row
        if rows[i][0] == rows[i - 1][0]:
            rows[i][0] = ""
    checks = [(bench, "")] + [
        (extra, f" (`{extra['command']}`, load {extra['load_average_at_start']} at its start)")
        for extra in files.cpu_parity
    ]
    parity = [
        f"- {network}: over {p['steps']} steps on {p['batches']} batches, bf16's losses differ from fp32's "
        f"(same initial weights) by {p['bf16_vs_fp32']:.4f} a step on average, another fp32 seed's by "
        f"{p['seed_vs_seed']:.4f}{where}"
        for run, where in checks
        for network, p in (run.get("parity") or {}).items()
    ]
    head = (
        f"`{bench['command']}`: torch {bench['torch']}, CPU {bench['cpu']}, load average "
        f"{bench['load_average_at_start']} at the start; batch {bench['batch_size']}, the median of "
        f"{bench['steps']} steps after {bench['warmup_steps']} warm-up steps (CPU figures only)."
    )
    body = table(["network", "set-up", "ms / step", "images/s", "vs plain fp32 loop"], rows, "llrrr")
    return (
        head
        + "\n\n"
        + body
        + ("\n\nbf16 against fp32 (dropout and stochastic depth off):\n\n" + "\n".join(parity) if parity else "")
    )


def tradeoff_block(files: RunFiles) -> str:
    """B0's accuracy against CPU-minutes (benchmarks/small_tradeoff.json): what the small study was sized from."""
    record = files.tradeoff or {}
    if not record.get("runs"):
        return "No trade-off measured (`python scripts/small_tradeoff.py`)."
    rows = [
        [
            f"{r['resolution']} px",
            r["epochs"],
            num(r["train_minutes"], digits=1),
            num(r["minutes_per_epoch"], digits=1),
            num(r["images_per_s"], digits=0),
            pct(r["val_top1"], 1),
            pct(r["val_top1_ema"], 1),
            pct(r["test_top1"], 1),
            pct(r["test_top1_ema"], 1),
        ]
        for r in record["runs"]
    ]
    return f"{record['what']}; {record['device']} (CPU figures only).\n\n" + table(
        [
            "B0 input",
            "epochs",
            "train min",
            "min / epoch",
            "train images/s",
            "val top-1",
            "val (EMA)",
            "test top-1",
            "test (EMA)",
        ],
        rows,
        "lrrrrrrrr",
    )


def cuts_block(files: RunFiles) -> str:
    """What the small study leaves out, each part with the clock's estimate (benchmarks/small_cuts.json), beside the
    estimate of the chains it runs."""
    record = files.cuts or {}
    if not record.get("cuts"):
        return "No estimate of the cut parts (`python scripts/small_cuts.py`)."
    study = sum(c["estimate_s"] for c in record.get("chains", []))
    rows = [
        [
            r["cut"],
            ", ".join(f"`{s}`" for s in r["stages"]),
            _duration(r["estimate_s"]),
            f"{r['estimate_s'] / study:.2f}" if study > 0 else "–",
        ]
        for r in record["cuts"]
    ]
    return (
        f"The clock's estimates (not measurements) on {record['device']}, B0 timed at "
        f"{record['b0_images_per_s']:,.0f} images/s, time growing as FLOPs^{record['cost_exponent']:.2f} "
        f"(CPU figures only). The chains the small study runs: {_duration(study)} in all.\n\n"
        + table(["cut", "stage", "estimate here", "x the small study"], rows, "llrr")
    )


def chains_block(files: RunFiles) -> str:
    """The small study's chains in order (study.yaml `small_study` under the run's params), each with its record
    (metrics/chains/<name>.json: code commit, processor, the clock's estimate there, the time taken) or
    'not run yet'."""
    from effnet.study import small_study_chains

    records = {c.get("chain"): c for c in files.chains}
    names = [c.name for c in small_study_chains(files.params)]
    names += [n for n in records if n not in names]
    rows = []
    for name in names:
        c = records.get(name)
        if c is None:
            rows.append([name, "–", "–", "–", "–", "–", "–", "not run yet"])
            continue
        estimate, wall = c.get("estimate_s"), c.get("wall_s")
        ratio = f"{wall / estimate:.2f}" if finite(estimate) and finite(wall) and estimate > 0 else "–"
        status = {0: "finished", 75: "stopped at its deadline (resumes)"}.get(
            c.get("exit_status"), f"failed ({c.get('exit_status')})"
        )
        if len(c.get("part_wall_s", [])) > 1:  # resumed after a deadline: `took` is the sum of the parts
            status += f" in {len(c['part_wall_s'])} parts"
        rows.append(
            [
                name,
                f"`{str(c.get('commit', ''))[:10]}`" + (" + edits" if c.get("code_changed_since_commit") else ""),
                c.get("cpu", "not recorded"),
                _duration(estimate),
                _duration(wall),
                ratio,
                f"{c.get('load_before', '–')} / {c.get('load_after', '–')}",
                status,
            ]
        )
    finished = [
        records[n]
        for n in names
        if n in records
        and records[n].get("exit_status") == 0
        and finite(records[n].get("estimate_s"))
        and finite(records[n].get("wall_s"))
    ]
    text = table(
        ["chain", "code commit", "CPU", "clock's estimate", "took", "took / estimate", "load before / after", "status"],
        rows,
        "lllrrrrl",
    )
    if finished:
        estimate, wall = sum(c["estimate_s"] for c in finished), sum(c["wall_s"] for c in finished)
        text += (
            f"\n\nFinished chains ({len(finished)}), summed: {_duration(wall)} against the clock's "
            f"{_duration(estimate)} (took / estimate {wall / estimate:.2f}); "
            f"{len(names) - len(finished)} of {len(names)} to run or finish."
        )
        longest = max(finished, key=lambda c: c["wall_s"])
        cpu = longest.get("cpu", "a processor not recorded")
        text += f" The longest: {longest.get('chain')}, {_duration(longest['wall_s'])} on {cpu}."
    return text


GENERATORS = {
    "results": lambda files: results_block(
        files.models,
        files.search,
        run=run_summary(files.params, files.models, files.chains),
        published=files.params.network.efficientnet_scaling == "published",
    ),
    "run": run_block,
    "search": search_block,
    "scaling": scaling_block,
    "times": times_block,
    "gpu-windows": windows_block,
    "checkpoints": checkpoints_block,
    "search-scope": lambda files: search_scope_table(files.search, files.search_targets),
    "cpu-bench": cpu_bench_block,
    "small-tradeoff": tradeoff_block,
    "chains": chains_block,
    "small-cuts": cuts_block,
}


def fill_blocks(text: str, files: RunFiles, where: str = "the text") -> str:
    """`text` with every generated block replaced by what `GENERATORS` makes of `files`.

    A block with no generator, or a start marker without its end, is a ValueError naming it and `where`.
    """
    names = re.findall(r"<!-- ([a-z][a-z0-9-]*):start -->", text)
    for name in names:
        if name not in GENERATORS:
            raise ValueError(f"{where}: no generator for the block '{name}'; known blocks: {', '.join(GENERATORS)}")
        if f"<!-- {name}:end -->" not in text:
            raise ValueError(f"{where}: the block '{name}' has no <!-- {name}:end --> marker")
    made = {name: GENERATORS[name](files) for name in dict.fromkeys(names)}
    return BLOCK.sub(lambda m: f"<!-- {m['name']}:start -->\n{made[m['name']]}\n<!-- {m['name']}:end -->", text)


def generated_pages(root: Path) -> list[Path]:
    """The pages that hold generated blocks or may: README.md, docs/*.md, benchmarks/README.md, vendor/*/README.md."""
    root = Path(root)
    pages = [
        root / "README.md",
        *sorted((root / "docs").glob("*.md")),
        root / "benchmarks" / "README.md",
        *sorted((root / "vendor").glob("*/README.md")),
    ]
    return [p for p in pages if p.is_file()]


def update_pages(pages: Sequence[Path], files: RunFiles) -> list[Path]:
    """Fill the generated blocks of `pages` from `files`; returns the pages that changed.

    Every page is checked before any is written, so a bad block leaves all of them untouched.
    """
    new = {Path(p): fill_blocks(Path(p).read_text(), files, str(p)) for p in pages}
    changed = [p for p, text in new.items() if text != p.read_text()]
    for page in changed:
        write_text(page, new[page])
    return changed


def fill_readme(
    readme: Path, *, run_params: Path, defaults: Path, models_table: Path, search_json: Path, search_table: Path
) -> tuple[list[Path], list[Path]]:
    """Fill the generated blocks of `readme` and of the pages beside it; returns (pages, pages that changed).

    `run_params` is what records the committed run's params (dvc.lock, or a params file of overrides); a
    missing README, a README without the results block, or a named `run_params` that does not exist is an error.
    """
    if not readme.is_file():
        raise FileNotFoundError(f"{readme}: no such file; run from the project root or name the README")
    if README_START not in readme.read_text():
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block to fill")
    if run_params != Path("dvc.lock") and not run_params.is_file():
        raise FileNotFoundError(f"--run-params {run_params}: no such file")
    files = read_run_files(
        readme.parent,
        run=run_params,
        defaults=defaults,
        models_table=models_table,
        search_json=search_json,
        search_table=search_table,
    )
    pages = [readme] + [p for p in generated_pages(readme.parent) if p.resolve() != readme.resolve()]
    return pages, update_pages(pages, files)
