"""The paper's figures on CIFAR-100, as DVC data plots (CSV) and static PNGs.

- Figure 1: test top-1 against parameters and against FLOPs; EfficientNet B0-B7 as a line,
  the baselines and the model at `model.phi` as points (`accuracy_vs_params`, `accuracy_vs_flops`),
  each with its 95% interval from its per-image predictions (`accuracy_intervals`).
- Validation against test top-1 of every model (`val_vs_test`): whether choosing on the
  validation split would have chosen the same as the test split.
- The coefficient search's landscape (`search.png`, from the search stage's `plots/search.csv`).
- Figure 3 / Figure 8: top-1 against FLOPs for depth, width, resolution and compound scaling,
  each line starting at the baseline B0 (`scaling`).
- Training curves of every run from its DVCLive directory (`training_curves.png`), and the
  same curves as one long table, a row per model and epoch (`training_curves.csv`).
- The faithfulness of the CAM methods per scaling strategy (`cam_faithfulness.png`, from the
  cam stage's `plots/cam_faithfulness.csv`).

The accuracy shown is `test/top1_ema`, in percent: the EMA weights where the run kept an EMA,
else the raw weights (the evaluate stage then repeats them in the EMA columns); the axis labels
say which, and how many validation and test images were scored, from the models table's
`has_ema`, `val/images` and `test/images`. The CSVs are written for `dvc plots show` and
`dvc plots diff`, which have no "colour by column" field: besides the long columns (`family`,
`test_top1`) each CSV repeats the y value in one column per series (`efficientnet`,
`baseline`, ...), empty elsewhere; a plot definition that lists those columns as `y` draws one
series each (Vega drops the empty cells). Where the series are the study's models or strategies,
which study.yaml lists, two templates of ours draw the long table instead, coloured by its `model`
(`training_curves.csv`, `.dvc/plots/lines_by_model.json`) or `strategy` column (`scaling.csv`,
`.dvc/plots/lines_by_strategy.json`), so that dvc.yaml names none. Missing inputs never stop the
stage: a CSV then has its header only and a PNG says what is missing.

Readable at 11 models and more, however close their results (the committed CPU run puts
nearly every model at 1%): legends sit outside the axes; point labels are placed by
`place_labels`, which merges the labels of coincident points into one and moves a label out
along a leader line until it overlaps no other label or marker; every curve has markers, so a
one-epoch run still shows its point. tests/test_plots.py checks that no two texts of any
figure overlap.

matplotlib is imported inside the drawing functions (Agg backend), so the rest of
`effnet` runs without it; pandas reads the tables (imported where it is used, likewise).
"""

from __future__ import annotations

import itertools
import math
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effnet import study
from effnet.figures import pyplot, save_figure
from effnet.io import write_csv, write_json

ACCURACY = "test/top1_ema"  # what the figures show
FIGURE1_COLUMNS = (
    "model",
    "label",
    "family",
    "params_m",
    "flops_g",
    "test_top1",
    "test_top1_low",
    "test_top1_high",
    "efficientnet",
    "baseline",
    "efficientnet_phi",
)
VAL_TEST_COLUMNS = ("model", "label", "group", "val_top1", "test_top1", "matrix", "phi", "scaling")
TRAINING_CURVES_COLUMNS = ("model", "epoch", "val_top1", "val_top1_ema", "train_loss")
# DVCLive metric -> column of training_curves.csv, and whether it is a fraction shown in percent
CURVE_METRICS = {
    "val/top1": ("val_top1", True),
    "val/top1_ema": ("val_top1_ema", True),
    "train/loss": ("train_loss", False),
}
LEGEND_OUTSIDE = dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


def read_table(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV written by this project: numbers as int or float, booleans as bool, empty cells as ''.

    A missing or empty file gives no rows.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    import pandas as pd  # here, not at module level: cam.py imports this module where pandas may be absent

    table = pd.read_csv(path)
    # object dtype first, so that to_dict gives Python ints, floats and bools, and '' where a cell is empty
    return table.astype(object).where(table.notna(), "").to_dict("records")


def finite(value: Any) -> bool:
    """A real number that is not NaN or infinite (CSV cells may be '' or text)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def label(row: dict[str, Any]) -> str:
    """A short name for a model row (effnet/study.py): B3, ResNet-50, phi=1.5, depth_2x."""
    return study.label_of(str(row["model"]), str(row.get("name", "")))


def scaling_columns() -> tuple[str, ...]:
    """Columns of plots/scaling.csv: one accuracy column per strategy of the study, for `dvc plots`."""
    return (
        "strategy",
        "model",
        "target",
        "flops_g",
        "flops_ratio",
        "params_m",
        "depth_multiplier",
        "width_multiplier",
        "resolution_px",
        "test_top1",
        "test_top1_low",
        "test_top1_high",
        *study.strategy_names(),
    )


def _percent(value: Any) -> float | str:
    return round(100.0 * value, 4) if finite(value) else ""


def accuracy_intervals(
    models: Sequence[dict[str, Any]], predictions_dir: Path | None
) -> dict[str, tuple[float, float]]:
    """{model: (low, high)}: the 95% interval of each model's test top-1 (%, the EMA weights as `ACCURACY`)
    from its per-image predictions, by the two-level bootstrap over test images and seeds
    (`effnet.stats.accuracy_interval`).

    Models without a predictions file (`predictions/<model>.npz`) have none; with one seed the interval covers the
    test images only.
    """
    from effnet.results import load_predictions, predictions_path
    from effnet.stats import accuracy_interval

    out = {}
    for row in models:
        path = predictions_path(predictions_dir, str(row["model"])) if predictions_dir is not None else None
        if path is not None and path.is_file():
            low, high = accuracy_interval(load_predictions(path).correct(ema=True))
            out[str(row["model"])] = (round(100.0 * low, 4), round(100.0 * high, 4))
    return out


def figure1_rows(
    models: Sequence[dict[str, Any]], intervals: dict[str, tuple[float, float]] | None = None
) -> list[dict[str, Any]]:
    """Rows of Figure 1: EfficientNet B0-B7 (by parameters), the baselines, the phi model; with each model's
    interval of test top-1 (`accuracy_intervals`) where `intervals` has one, else empty cells."""
    intervals = intervals or {}
    rows = []
    for row in models:
        if row.get("group") == "matrix":
            entry = study.find(str(row["model"]))
            family = "baseline" if entry is not None and entry.is_baseline else "efficientnet"
        elif row.get("group") == "phi":
            family = "efficientnet_phi"
        else:
            continue
        accuracy = _percent(row.get(ACCURACY))
        low, high = intervals.get(str(row["model"]), ("", ""))
        rows.append(
            {
                "model": row["model"],
                "label": label(row),
                "family": family,
                "params_m": row["params"] / 1e6,
                "flops_g": row["flops"] / 1e9,
                "test_top1": accuracy,
                "test_top1_low": low,
                "test_top1_high": high,
                **{f: (accuracy if f == family else "") for f in ("efficientnet", "baseline", "efficientnet_phi")},
            }
        )
    order = {"efficientnet": 0, "baseline": 1, "efficientnet_phi": 2}
    return sorted(rows, key=lambda r: (order[r["family"]], r["params_m"]))


def summary_metrics(models: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Test top-1 (%) of the matrix and the phi model under short fixed keys: `metrics/summary.json`.

    One small flat file, so that `dvc metrics show metrics/summary.json` and `dvc exp show`
    with `--keep` fit in 160 columns (the full per-model files have 34 keys each). The phi
    model is `phi` whatever its phi, so experiments with other phis share the column.
    """
    summary = {}
    order = {"efficientnet": 0, "baseline": 1, "phi": 2}  # B0-B7, the baselines by size, the phi model

    def kind(row: dict) -> str:
        if row.get("group") == "phi":
            return "phi"
        return "efficientnet" if str(row["model"]).startswith("efficientnet") else "baseline"

    for row in sorted(models, key=lambda r: (order[kind(r)], r.get("params", 0))):
        if row.get("group") in ("matrix", "phi") and finite(row.get(ACCURACY)):
            summary["phi" if row["group"] == "phi" else label(row)] = round(100.0 * row[ACCURACY], 2)
    return summary


def val_vs_test_rows(models: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model: validation and test top-1 (EMA), the test value repeated in its group's column."""
    rows = []
    for row in models:
        test = _percent(row.get(ACCURACY))
        group = row.get("group", "")
        rows.append(
            {
                "model": row["model"],
                "label": label(row),
                "group": group,
                "val_top1": _percent(row.get("val/top1_ema")),
                "test_top1": test,
                **{g: (test if g == group else "") for g in ("matrix", "phi", "scaling")},
            }
        )
    return rows


def scaling_rows(
    models: Sequence[dict[str, Any]], intervals: dict[str, tuple[float, float]] | None = None
) -> list[dict[str, Any]]:
    """Figure 3 / 8: per strategy, the baseline B0 then its scaled models by FLOPs, with each model's interval of
    test top-1 where `intervals` (`accuracy_intervals`) has one.

    The baseline row is repeated in every strategy, so that each line starts there.
    """
    intervals = intervals or {}
    scaled = [r for r in models if r.get("group") == "scaling"]
    baseline = next((r for r in scaled if r.get("strategy") == "baseline"), None)
    base_flops = baseline["flops"] if baseline else None
    rows = []
    strategies = study.strategy_names()
    for strategy in strategies:
        members = sorted((r for r in scaled if r.get("strategy") == strategy), key=lambda r: r["flops"])
        if not members:
            continue
        for row in ([baseline] if baseline else []) + members:
            accuracy = _percent(row.get(ACCURACY))
            rows.append(
                {
                    "strategy": strategy,
                    "model": row["model"],
                    "target": row.get("target") or 1.0,
                    "flops_g": row["flops"] / 1e9,
                    "flops_ratio": row["flops"] / base_flops if base_flops else "",
                    "params_m": row["params"] / 1e6,
                    "depth_multiplier": row.get("depth", ""),
                    "width_multiplier": row.get("width", ""),
                    "resolution_px": row.get("resolution", ""),
                    "test_top1": accuracy,
                    **dict(
                        zip(
                            ("test_top1_low", "test_top1_high"), intervals.get(str(row["model"]), ("", "")), strict=True
                        )
                    ),
                    **{s: (accuracy if s == strategy else "") for s in strategies},
                }
            )
    return rows


def read_dvclive_series(run_dir: Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `metric` (e.g. 'val/top1') from a DVCLive directory; empty when not logged."""
    path = Path(run_dir) / "plots" / "metrics" / f"{metric}.tsv"
    if not path.is_file() or path.stat().st_size == 0:
        return np.array([]), np.array([])
    import pandas as pd

    table = pd.read_csv(path, sep="\t")
    values = [c for c in table.columns if c not in ("step", "timestamp")]
    if table.empty or not values:
        return np.array([]), np.array([])
    steps = table["step"] if "step" in table else table.iloc[:, 0]
    return steps.to_numpy(dtype=float), table[values[0]].to_numpy(dtype=float)


def dvclive_runs(dvclive_dir: Path, only: Iterable[str] | None = None) -> list[tuple[str, Path]]:
    """(name relative to `dvclive_dir`, directory) of every DVCLive run below it, sorted.

    With `only`, just the runs of those models: the curves of weights that this run did not
    evaluate (left in dvclive/ by an earlier run with other targets) are not drawn.
    """
    root = Path(dvclive_dir)
    if not root.is_dir():
        return []
    runs = {p.parent.parent.relative_to(root).as_posix(): p.parent.parent for p in root.glob("**/plots/metrics")}
    if only is not None:
        wanted = set(only)
        runs = {name: path for name, path in runs.items() if name in wanted}
    return sorted(runs.items(), key=lambda item: _natural(item[0]))


def training_curve_rows(runs: Sequence[tuple[str, Path]]) -> list[dict[str, Any]]:
    """One row per run and epoch (1-based, as in the PNG): val top-1 raw and EMA (%), train loss; blank where a
    metric was not logged at that epoch. The long table behind the training-curves plot of dvc.yaml."""
    rows: list[dict[str, Any]] = []
    for name, run_dir in runs:
        by_epoch: dict[int, dict[str, Any]] = {}
        for metric, (column, percent) in CURVE_METRICS.items():
            steps, values = read_dvclive_series(run_dir, metric)
            for step, value in zip(steps, values, strict=True):  # two columns of one table
                row = by_epoch.setdefault(int(step) + 1, {"model": name, "epoch": int(step) + 1})
                row[column] = _percent(value) if percent else float(value)
        rows += [by_epoch[epoch] for epoch in sorted(by_epoch)]
    return rows


def _natural(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


@dataclass(frozen=True)
class Scored:
    """What the run scored, for the axis labels: EMA or raw weights, and how many images per split."""

    weights: str = "EMA weights"
    val_images: str = "the validation split"
    test_images: str = "the official 10,000 test images"


def scored(models: Sequence[dict[str, Any]]) -> Scored:
    """Read from the models table (`has_ema`, `val/images`, `test/images`) what the figures show.

    No hard-coded counts: the smoke and CPU runs score subsets, and runs without an EMA
    (`train.ema_decay: 0`) show the raw weights in the EMA columns.
    """
    if not models:
        return Scored()
    ema = {r.get("has_ema") for r in models if r.get("has_ema") in (True, False)}
    weights = {frozenset({True}): "EMA weights", frozenset({False}): "raw weights, no EMA"}.get(
        frozenset(ema), "EMA weights where kept, else raw"
    )

    def count(key: str, what: str) -> str:
        values = sorted({int(r[key]) for r in models if finite(r.get(key))})
        if not values:
            return f"the {what} split"
        n = f"{values[0]:,}" if len(values) == 1 else f"{values[0]:,}-{values[-1]:,}"
        return f"{n} {what} images"

    test = count("test/images", "test")
    if test == "10,000 test images":
        test = "the official 10,000 test images"
    return Scored(weights=weights, val_images=count("val/images", "validation"), test_images=test)


# --------------------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------------------


def placeholder(path: Path, title: str, message: str) -> None:
    """A small PNG that says why the figure is empty (declared outputs always exist)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.text(0.5, 0.6, title, ha="center", va="center", fontsize=12, weight="bold", transform=ax.transAxes)
    ax.text(0.5, 0.35, message, ha="center", va="center", fontsize=9, wrap=True, transform=ax.transAxes)
    save_figure(fig, path)


def _plain_log_ticks(axis: Any) -> None:
    """Tick labels 1, 2, 5, 10, 20 rather than 2x10^0 on a log axis (other minor ticks unlabelled)."""
    from matplotlib.ticker import FuncFormatter

    def plain(value: float, _: Any) -> str:
        if value <= 0:
            return ""
        leading = value / 10 ** math.floor(math.log10(value) + 1e-9)
        return f"{value:g}" if round(leading, 6) in (1.0, 2.0, 5.0) else ""

    axis.set_major_formatter(FuncFormatter(plain))
    axis.set_minor_formatter(FuncFormatter(plain))


@dataclass
class _Group:
    x: float
    y: float
    pixel: np.ndarray
    texts: list[str] = field(default_factory=list)
    color: str = "black"


def place_labels(
    ax: Any,
    points: Sequence[tuple[float, float, str, str]],
    *,
    fontsize: float = 8,
    merge_px: float = 4.0,
    per_line: int = 38,
    marker_pt: float = 4.0,
) -> list[Any]:
    """Label data points so that no two labels overlap each other or any marker; return the annotations.

    `points` are (x, y, text, colour) in data coordinates. Points closer than `merge_px` pixels
    get one label ("B0, B1, B2", wrapped at `per_line` characters). Each label tries offsets on
    rings of growing radius around its point, 16 directions each, and takes the first whose box
    lies inside the axes and clear of every placed label, marker and drawn line (of labels and
    markers only, where no such place exists); a label further out than
    the first ring gets a thin leader line to its point (`marker_pt`: half a marker's side). The axes' limits and
    position must be final (legend placed, limits set) before this is called, as the boxes are computed in pixels.
    """
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    groups: list[_Group] = []
    for x, y, text, color in points:
        pixel = ax.transData.transform((x, y))
        near = next((g for g in groups if np.hypot(*(g.pixel - pixel)) <= merge_px), None)
        if near is None:
            groups.append(_Group(x, y, pixel, [text], color))
        else:
            near.texts.append(text)
            near.color = near.color if near.color == color else "black"
    area = ax.get_window_extent(renderer)
    marker = marker_pt * fig.dpi / 72  # pixels
    taken = [(g.pixel[0] - marker, g.pixel[1] - marker, g.pixel[0] + marker, g.pixel[1] + marker) for g in groups]
    lines = _line_boxes(ax)
    per_point = fig.dpi / 72
    annotations = []
    for group in groups:
        text = "\n".join(textwrap.wrap(", ".join(group.texts), per_line, break_on_hyphens=False)) or ""
        probe = ax.text(0, 0, text, fontsize=fontsize)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        width, height = extent.width + 2, extent.height + 2  # a pixel of air on each side
        best = None
        # first clear of the drawn lines too; where that is impossible, only of labels and markers
        for inside, avoid in ((True, lines), (True, None), (False, None)):
            for radius in marker_pt + np.array([1, 6, 12, 20, 30, 42, 56, 72, 90, 110, 132, 156, 186, 221]):
                for angle in np.deg2rad(np.arange(0, 360, 22.5) + 22.5):  # starting above-right, clockwise pairs
                    dx, dy = radius * np.cos(angle), radius * np.sin(angle)
                    ha = "left" if dx > 0.3 * radius else "right" if dx < -0.3 * radius else "center"
                    va = "bottom" if dy > 0.3 * radius else "top" if dy < -0.3 * radius else "center"
                    x0 = group.pixel[0] + dx * per_point - {"left": 0, "center": width / 2, "right": width}[ha]
                    y0 = group.pixel[1] + dy * per_point - {"bottom": 0, "center": height / 2, "top": height}[va]
                    box = (x0, y0, x0 + width, y0 + height)
                    if inside and not (
                        box[0] >= area.x0 and box[2] <= area.x1 and box[1] >= area.y0 and box[3] <= area.y1
                    ):
                        continue
                    if not any(_intersect(box, other) for other in taken) and not (
                        avoid is not None
                        and len(avoid)
                        and (
                            (avoid[:, 0] < box[2])
                            & (box[0] < avoid[:, 2])
                            & (avoid[:, 1] < box[3])
                            & (box[1] < avoid[:, 3])
                        ).any()
                    ):
                        best = (dx, dy, ha, va, radius, box)
                        break
                if best:
                    break
            if best:
                break
        if best is None:  # nowhere free even outside the axes: leave it at the first ring (the test would fail)
            best = (marker_pt, marker_pt, "left", "bottom", marker_pt, (0, 0, 0, 0))
        dx, dy, ha, va, radius, box = best
        taken.append(box)
        # the leader line leaves the label at its corner or edge nearest the point, never across the text
        relpos = ({"left": 0.0, "center": 0.5, "right": 1.0}[ha], {"bottom": 0.0, "center": 0.5, "top": 1.0}[va])
        leader = (
            dict(arrowstyle="-", color="0.55", lw=0.6, shrinkA=1, shrinkB=3, relpos=relpos)
            if radius > marker_pt + 6
            else None
        )
        annotations.append(
            ax.annotate(
                text,
                (group.x, group.y),
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                va=va,
                fontsize=fontsize,
                color=group.color,
                arrowprops=leader,
                annotation_clip=False,
            )
        )
    return annotations


def _line_boxes(ax: Any, step: float = 3.0, half: float = 1.5) -> np.ndarray:
    """Small pixel boxes every `step` pixels along each drawn line of `ax` (curves, y = x): (N, 4) x0, y0, x1, y1."""
    centres = []
    for line in ax.get_lines():
        if not line.get_visible() or line.get_linestyle() in ("None", "", " ") or len(line.get_xdata()) < 2:
            continue
        path = ax.transData.transform(np.asarray(line.get_xydata(), dtype=float))
        for start, end in itertools.pairwise(path):
            if not (np.isfinite(start).all() and np.isfinite(end).all()):
                continue
            count = max(2, int(np.hypot(*(end - start)) / step) + 1)
            centres.append(start + np.linspace(0, 1, count)[:, None] * (end - start))
    if not centres:
        return np.zeros((0, 4))
    points = np.concatenate(centres)
    return np.hstack([points - half, points + half])


def _intersect(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _pad_limits(ax: Any, log_x: bool = False, fraction: float = 0.08) -> None:
    """Widen the data limits a little and freeze them, so labels have room and stay where placed."""
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    if log_x:
        ratio = (x1 / x0) ** fraction if x0 > 0 and x1 > x0 else 1.5
        ax.set_xlim(x0 / ratio, x1 * ratio)
    else:
        ax.set_xlim(x0 - fraction * (x1 - x0), x1 + fraction * (x1 - x0))
    ax.set_ylim(y0 - fraction * (y1 - y0), y1 + fraction * (y1 - y0))


def plot_figure1(rows: Sequence[dict[str, Any]], x: str, path: Path, what: Scored = Scored()) -> None:
    """Figure 1: test top-1 against `x` ('params_m' or 'flops_g'), log scale."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    effnets = [r for r in rows if r["family"] == "efficientnet" and finite(r["test_top1"])]
    if effnets:
        effnets = sorted(effnets, key=lambda r: r[x])
        ax.plot(
            [r[x] for r in effnets],
            [r["test_top1"] for r in effnets],
            "o-",
            color="tab:red",
            lw=2,
            label="EfficientNet B0-B7",
        )
    colors = {"efficientnet": "tab:red"}
    for family, marker, color, name in (
        ("baseline", "s", "tab:blue", "baselines (CIFAR stems)"),
        ("efficientnet_phi", "*", "tab:purple", "EfficientNet at model.phi"),
    ):
        colors[family] = color
        points = [r for r in rows if r["family"] == family and finite(r["test_top1"])]
        if points:
            ax.scatter(
                [r[x] for r in points],
                [r["test_top1"] for r in points],
                marker=marker,
                s=70,
                color=color,
                label=name,
                zorder=3,
            )
    barred = [
        r for r in rows if finite(r["test_top1"]) and finite(r.get("test_top1_low")) and finite(r.get("test_top1_high"))
    ]
    for r in barred:
        ax.vlines(r[x], r["test_top1_low"], r["test_top1_high"], color=colors[r["family"]], lw=1.2, zorder=2)
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel(
        "parameters (millions, log scale)" if x == "params_m" else "FLOPs (billions of multiply-adds, log scale)"
    )
    ax.set_ylabel(f"CIFAR-100 test top-1 (%), {what.weights}")
    bars = "\nbars: 95% bootstrap interval over the test images and seeds" if barred else ""
    ax.set_title(
        f"Model size vs. accuracy (cf. paper Figure 1{'' if x == 'params_m' else ', FLOPs'})\n"
        f"test top-1 on {what.test_images}{bars}",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(**LEGEND_OUTSIDE)
    _pad_limits(ax, log_x=True)
    place_labels(ax, [(r[x], r["test_top1"], r["label"], colors[r["family"]]) for r in rows if finite(r["test_top1"])])
    save_figure(fig, path)


def plot_val_vs_test(rows: Sequence[dict[str, Any]], path: Path, what: Scored = Scored()) -> None:
    """Validation against test top-1 of every model, with the diagonal y = x."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 6.0))
    points = [r for r in rows if finite(r["val_top1"]) and finite(r["test_top1"])]
    colors = {"matrix": "tab:red", "phi": "tab:purple", "scaling": "tab:green", "other": "tab:gray"}
    for group, color in colors.items():
        members = [r for r in points if r["group"] == group]
        if members:
            ax.scatter(
                [r["val_top1"] for r in members], [r["test_top1"] for r in members], color=color, label=group, zorder=3
            )
    values = [v for r in points for v in (r["val_top1"], r["test_top1"])]
    low, high = (min(values), max(values)) if values else (0, 100)
    pad = max(1.0, 0.15 * (high - low))  # room for the labels around the points
    low, high = low - pad, high + pad
    ax.plot([low, high], [low, high], "k--", lw=1, label="y = x")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel(f"validation top-1 (%), {what.val_images} (held out of train)")
    ax.set_ylabel(f"test top-1 (%), {what.test_images}")
    ax.set_title(f"Validation vs. test accuracy ({what.weights})", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(**LEGEND_OUTSIDE)
    place_labels(
        ax,
        [(r["val_top1"], r["test_top1"], r["label"], colors.get(r["group"], "tab:gray")) for r in points],
        fontsize=7,
    )
    save_figure(fig, path)


def plot_scaling(rows: Sequence[dict[str, Any]], path: Path, what: Scored = Scored()) -> None:
    """Figure 3 / 8: one line per strategy against FLOPs relative to B0, and a table of the models beside it.

    The x axis is each model's real FLOPs over B0's, so no point needs a label; the table
    gives each model's FLOPs, depth, width and resolution multipliers (how far each dimension
    moved) and its accuracy.
    """
    plt = pyplot()
    fig, (ax, side) = plt.subplots(1, 2, figsize=(11.5, 5.2), gridspec_kw=dict(width_ratios=(1.5, 1.0)))
    base = next((r for r in rows if str(r["model"]).endswith("baseline")), None)
    strategies = study.strategy_names()
    bars = [r for r in rows if finite(r.get("test_top1_low")) and finite(r.get("test_top1_high"))]
    if base is not None and base in bars:  # B0 starts every line: its bar once, unmoved
        ax.vlines(base["flops_ratio"], base["test_top1_low"], base["test_top1_high"], color="black", lw=1.2, zorder=2)
    for i, strategy in enumerate(strategies):
        line = [r for r in rows if r["strategy"] == strategy and finite(r["test_top1"]) and finite(r["flops_ratio"])]
        if not line:
            continue
        colour = study.strategy(strategy).colour
        ax.plot(
            [r["flops_ratio"] for r in line],
            [r["test_top1"] for r in line],
            "-",
            marker=study.strategy(strategy).marker,
            color=colour,
            lw=2.5 if strategy == "compound" else 1.5,
            ms=7,
            mfc="none",
            mew=1.5,
            label="compound scaling" if strategy == "compound" else f"scale {strategy}",
        )
        # each scaled model's interval, its bar moved sideways by a few percent per strategy so that the bars of
        # models of about the same FLOPs stay apart
        dodge = 2.0 ** (0.06 * (i - (len(strategies) - 1) / 2))
        for r in line:
            if (base is None or r["model"] != base["model"]) and r in bars:
                ax.vlines(
                    r["flops_ratio"] * dodge, r["test_top1_low"], r["test_top1_high"], color=colour, lw=1.2, zorder=2
                )
    ax.set_xscale("log", base=2)
    targets = sorted({float(r["target"]) for r in rows if finite(r["target"])} | {1.0})
    ax.set_xticks(targets, [f"{t:g}x" + (" (B0)" if t == 1.0 else "") for t in targets])
    ax.minorticks_off()
    ax.set_xlabel("FLOPs relative to B0 (log scale)")
    ax.set_ylabel(f"CIFAR-100 test top-1 (%), {what.weights}")
    ax.set_title(
        "Scaling B0 by one dimension vs. compound\n(cf. paper Figures 3 and 8)"
        + ("; bars: 95% bootstrap interval\nover the test images and seeds, moved apart sideways" if bars else ""),
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, fontsize=8, borderaxespad=0.0)

    side.axis("off")
    table_rows = ([base] if base else []) + [r for r in rows if not str(r["model"]).endswith("baseline")]
    cells = [
        [
            ("B0" if r is base else f"{r['strategy']} {r['target']:g}x"),
            _fmt(r["flops_ratio"], "{:.2f}x"),
            _fmt(r.get("depth_multiplier"), "{:.2f}"),
            _fmt(r.get("width_multiplier"), "{:.2f}"),
            _fmt(r.get("resolution_px"), "{:g} px"),
            _fmt(r["test_top1"], "{:.2f}"),
        ]
        for r in table_rows
    ]
    if cells:
        table = side.table(
            cellText=cells,
            colLabels=["model", "FLOPs", "depth", "width", "resolution", "top-1 %"],
            loc="upper center",
            cellLoc="right",
            colLoc="right",
        )
        table.auto_set_font_size(False)
        table.set_fontsize(7.5)
        table.auto_set_column_width(list(range(6)))
        table.scale(1.0, 1.25)
        for (row, _), cell in table.get_celld().items():
            cell.set_linewidth(0.3)
            if 0 < row <= len(table_rows) and table_rows[row - 1] is not base:
                name = table_rows[row - 1]["strategy"]
                cell.get_text().set_color(study.strategy(name).colour if name in study.strategy_names() else "black")
        side.set_title("the models (real FLOPs; depth and width multipliers of B0)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def _fmt(value: Any, pattern: str) -> str:
    return pattern.format(value) if finite(value) else "-"


def plot_search(candidates: Sequence[dict[str, Any]], path: Path) -> None:
    """The grid search: (beta, gamma) coloured by val top-1 with alpha written in, and val top-1 against FLOPs."""
    plt = pyplot()
    ok = [r for r in candidates if finite(r.get("val_top1"))]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    accuracy = np.array([100 * r["val_top1"] for r in ok])
    points = left.scatter(
        [r["beta"] for r in ok],
        [r["gamma"] for r in ok],
        c=accuracy,
        cmap="viridis",
        s=90,
        edgecolors="k",
        linewidths=0.5,
        zorder=3,
    )
    fig.colorbar(points, ax=left, label="validation top-1 (%)")
    right.scatter([r.get("flops_ratio", np.nan) for r in ok], accuracy, color="tab:gray", zorder=3)
    for ax, x in ((left, "beta"), (right, "flops_ratio")):
        for key, style in (
            ("chosen", dict(s=260, facecolors="none", edgecolors="tab:red", linewidths=2, label="chosen")),
            ("paper", dict(s=180, marker="*", color="gold", edgecolors="k", label="paper (1.2, 1.1, 1.15)")),
        ):
            marked = [r for r in ok if r.get(key) is True]
            if marked:
                y = [r["gamma"] for r in marked] if ax is left else [100 * r["val_top1"] for r in marked]
                ax.scatter([r.get(x, np.nan) for r in marked], y, zorder=4, **style)
        ax.grid(True, alpha=0.3)
    left.margins(0.12)
    left.set_xlabel("beta (width)")
    left.set_ylabel("gamma (resolution)")
    left.set_title(
        f"{len(ok)} candidates with alpha * beta^2 * gamma^2 ~ 2\n(alpha = depth, written beside each point)",
        fontsize=10,
    )
    # each candidate is trained at its own phi, where its real network costs search.flops_target x B0
    right.set_xlabel("FLOPs of each candidate as trained (at its own phi), relative to B0")
    right.set_ylabel("validation top-1 (%)")
    right.set_title("Short-budget validation accuracy per candidate", fontsize=10)
    handles = [h for ax in (left, right) for h in ax.get_legend_handles_labels()[0]]
    labels = [t for ax in (left, right) for t in ax.get_legend_handles_labels()[1]]
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        fig.legend(unique.values(), unique.keys(), loc="outside lower center", ncol=len(unique), fontsize=8)
    fig.canvas.draw()  # constrained layout settles the axes before the labels are placed in pixels
    fig.set_layout_engine("none")
    # several alphas share a (beta, gamma) point: one label lists them ("a=1, 1.1, 1.2")
    by_point: dict[tuple[float, float], list[str]] = {}
    for r in sorted(ok, key=lambda r: r["alpha"]):
        by_point.setdefault((r["beta"], r["gamma"]), []).append(f"{r['alpha']:g}")
    place_labels(
        left,
        [(b, g, "a=" + ", ".join(alphas), "black") for (b, g), alphas in by_point.items()],
        fontsize=7,
        marker_pt=9.0,
    )  # the 'chosen' ring is wide
    save_figure(fig, path)


def plot_training_curves(runs: Sequence[tuple[str, Path]], path: Path, columns: int = 4) -> None:
    """One small panel per run: val top-1 raw and EMA (left axis, %), train loss (right axis)."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    rows = math.ceil(len(runs) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.4 * columns, 2.6 * rows + 0.4), squeeze=False, layout="constrained"
    )
    for ax, (name, run_dir) in zip(axes.flat, runs, strict=False):  # the grid may have spare cells
        # Markers, as a one-epoch run is a single point, and distinct ones, as the series may coincide.
        # Both axes start at 0 with different headroom, so that a lone loss point and a lone
        # accuracy point do not sit on the same pixel (as they would, each centred on its own axis).
        epochs, top = 1.0, 0.0
        for metric, style, text in (
            ("val/top1", dict(ls="-", marker="o", ms=4), "val top-1"),
            ("val/top1_ema", dict(ls="--", marker="s", ms=6, mfc="none"), "val top-1 EMA"),
        ):
            steps, values = read_dvclive_series(run_dir, metric)
            if len(steps):
                ax.plot(steps + 1, 100 * values, label=text, **style)
                epochs, top = max(epochs, steps.max() + 1), max(top, 100 * values.max())
        ax.set_ylim(0, max(1.0, top) * 1.1)
        ax.set_ylabel("top-1 (%)", fontsize=7)
        steps, loss = read_dvclive_series(run_dir, "train/loss")
        if len(steps):
            twin = ax.twinx()
            twin.plot(steps + 1, loss, color="tab:gray", lw=1, marker="x", ms=6, label="train loss")
            twin.set_ylim(0, max(1e-3, loss.max()) * 1.35)
            twin.tick_params(labelsize=6)
            twin.set_ylabel("train loss", fontsize=7, color="tab:gray")
            epochs = max(epochs, steps.max() + 1)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.set_xlim(0.5, epochs + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.tick_params(labelsize=6)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(runs) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles + [plt.Line2D([], [], color="tab:gray", marker="x")],
            labels + ["train loss"],
            loc="outside upper center",
            ncol=3,
            fontsize=8,
        )
    save_figure(fig, path, dpi=90)


def plot_cam_faithfulness(rows: Sequence[dict[str, Any]], path: Path, reference: str = "random") -> None:
    """Per CAM method: ROAD combined and the CamMult confidence change against FLOPs, one line per strategy."""
    plt = pyplot()
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != reference]
    metrics = (
        ("road_combined", "ROAD combined\n(LeRF - MoRF) / 2"),
        ("cam_mult_confidence_change", "confidence change,\nimage x map"),
    )
    fig, axes = plt.subplots(
        len(metrics), len(methods), figsize=(4.2 * len(methods), 3.2 * len(metrics)), squeeze=False
    )
    baseline = [r for r in rows if r["strategy"] == "baseline"]
    for c, method in enumerate(methods):
        for r_index, (key, text) in enumerate(metrics):
            ax = axes[r_index, c]
            for strategy in study.strategy_names():
                line = sorted(
                    [r for r in baseline if r["method"] == method]
                    + [r for r in rows if r["strategy"] == strategy and r["method"] == method],
                    key=lambda r: r["flops_ratio"],
                )
                if len(line) > (1 if baseline else 0):
                    ax.plot(
                        [r["flops_ratio"] for r in line],
                        [r[key] for r in line],
                        "o-",
                        color=study.strategy(strategy).colour,
                        label=strategy,
                    )
            b0 = [r for r in baseline if r["method"] == method]
            if b0:  # B0 itself, where every line starts: drawn even before any scaled model has its maps
                ax.scatter(
                    [r["flops_ratio"] for r in b0],
                    [r[key] for r in b0],
                    marker="o",
                    color="black",
                    label="B0",
                    zorder=3,
                )
            floor = [r for r in rows if r["method"] == reference]
            if floor:
                ax.scatter(
                    [r["flops_ratio"] for r in floor],
                    [r[key] for r in floor],
                    marker="x",
                    color="tab:gray",
                    label=f"{reference} map",
                )
            ax.axhline(0, color="k", lw=0.5)
            ax.set_title(method if r_index == 0 else "", fontsize=9)
            ax.set_xlabel("FLOPs relative to B0", fontsize=8)
            ax.set_ylabel(text, fontsize=8)
            ax.grid(True, alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(
        "Faithfulness of the maps of the scaling study (higher is better; true-class probability)", fontsize=10
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))  # room below for the legend, outside every panel
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=8)
    save_figure(fig, path)


# --------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------


def make_plots(
    *,
    models_table: Path,
    search_table: Path,
    cam_table: Path,
    dvclive_dir: Path,
    out_dir: Path,
    log: Callable[[str], Any] = print,
    summary: Path | None = None,
    predictions_dir: Path | None = None,
) -> dict[str, Path]:
    """Write every CSV and PNG of the plots stage into `out_dir`, and `summary_metrics` to `summary`;
    return {name: path}. The intervals of Figure 1 and the scaling figure come from the per-image predictions in
    `predictions_dir`.

    Inputs that are missing or empty give a header-only CSV and a placeholder PNG, with a
    note through `log`.
    """
    out_dir = Path(out_dir)
    models = [r for r in read_table(models_table) if finite(r.get("params")) and finite(r.get("flops"))]
    written: dict[str, Path] = {}

    def emit(
        name: str,
        rows: list[dict[str, Any]] | None,
        columns: Sequence[str] | None,
        draw: Callable[[Path], None],
        missing: str,
    ) -> None:
        if columns is not None:
            written[f"{name}.csv"] = out_dir / f"{name}.csv"
            write_csv(out_dir / f"{name}.csv", rows or [], columns)
        png = out_dir / f"{name}.png"
        written[f"{name}.png"] = png
        if rows:
            draw(png)
        else:
            log(f"note: {png}: {missing}; wrote a placeholder")
            placeholder(png, name.replace("_", " "), missing)

    what = scored(models)
    if summary is not None:
        write_json(summary, summary_metrics(models))
        written[Path(summary).name] = Path(summary)
    intervals = accuracy_intervals(models, predictions_dir)
    figure1 = figure1_rows(models, intervals)
    no_matrix = f"no matrix or phi models in {models_table}"
    emit(
        "accuracy_vs_params", figure1, FIGURE1_COLUMNS, lambda p: plot_figure1(figure1, "params_m", p, what), no_matrix
    )
    emit("accuracy_vs_flops", figure1, FIGURE1_COLUMNS, lambda p: plot_figure1(figure1, "flops_g", p, what), no_matrix)
    val_test = val_vs_test_rows(models)
    emit(
        "val_vs_test",
        val_test,
        VAL_TEST_COLUMNS,
        lambda p: plot_val_vs_test(val_test, p, what),
        f"no models in {models_table}",
    )
    scaling = scaling_rows(models, intervals)
    emit(
        "scaling",
        scaling,
        scaling_columns(),
        lambda p: plot_scaling(scaling, p, what),
        f"no scaling-study models in {models_table}",
    )
    candidates = [r for r in read_table(search_table) if finite(r.get("val_top1"))]
    emit("search", candidates, None, lambda p: plot_search(candidates, p), f"no search results in {search_table}")
    runs = dvclive_runs(dvclive_dir, only=[str(r["model"]) for r in read_table(models_table)])
    written["training_curves.csv"] = out_dir / "training_curves.csv"
    write_csv(out_dir / "training_curves.csv", training_curve_rows(runs), TRAINING_CURVES_COLUMNS)
    emit(
        "training_curves",
        runs,
        None,
        lambda p: plot_training_curves(runs, p),
        f"no DVCLive runs of the models in {models_table} below {dvclive_dir}",
    )
    faithfulness = [r for r in read_table(cam_table) if finite(r.get("road_combined")) and finite(r.get("flops_ratio"))]
    emit(
        "cam_faithfulness",
        faithfulness,
        None,
        lambda p: plot_cam_faithfulness(faithfulness, p),
        f"no faithfulness results in {cam_table}",
    )
    return written
