"""The paper's figures on CIFAR-100, as DVC data plots (CSV) and static PNGs.

- Figure 1: test top-1 against parameters and against FLOPs; EfficientNet B0-B7 as a line,
  the baselines and the model at `model.phi` as points (`accuracy_vs_params`, `accuracy_vs_flops`).
- Validation against test top-1 of every model (`val_vs_test`): whether choosing on the
  validation split would have chosen the same as the test split.
- The coefficient search's landscape (`search.png`, from the search stage's `plots/search.csv`).
- Figure 3 / Figure 8: top-1 against FLOPs for depth, width, resolution and compound scaling,
  each line starting at the baseline B0 (`scaling`).
- Training curves of every run from its DVCLive directory (`training_curves.png`).
- The faithfulness of the CAM methods per scaling strategy (`cam_faithfulness.png`, from the
  cam stage's `plots/cam_faithfulness.csv`).

The accuracy shown is that of the EMA weights (`test/top1_ema`), in percent. The CSVs are
written for `dvc plots show` and `dvc plots diff`, which has no "colour by column" field: besides the long
columns (`family`, `test_top1`) each CSV repeats the y value in one column per series
(`efficientnet`, `baseline`, ...), empty elsewhere; a plot definition that lists those
columns as `y` draws one series each (Vega drops the empty cells). Missing inputs never
stop the stage: a CSV then has its header only and a PNG says what is missing.

matplotlib is imported inside the drawing functions (Agg backend), so the rest of
`effnet` runs without it.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from effnet.io import write_atomic, write_csv

STRATEGIES = ("depth", "width", "resolution", "compound")
ACCURACY = "test/top1_ema"  # what the figures show
BASELINE_LABELS = {"resnet50": "ResNet-50", "resnet152": "ResNet-152", "densenet201": "DenseNet-201"}
FIGURE1_COLUMNS = ("model", "label", "family", "params_m", "flops_g", "test_top1", "efficientnet", "baseline",
                   "efficientnet_phi")
VAL_TEST_COLUMNS = ("model", "label", "group", "val_top1", "test_top1", "matrix", "phi", "scaling")
SCALING_COLUMNS = ("strategy", "model", "target", "flops_g", "flops_ratio", "params_m", "test_top1", *STRATEGIES)
COLORS = {"depth": "tab:blue", "width": "tab:orange", "resolution": "tab:green", "compound": "tab:red"}


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


def read_table(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV written by this project, numbers parsed (int, float), booleans as bool, '' kept.

    A missing file gives no rows.
    """
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{key: _parse(value) for key, value in row.items()} for row in csv.DictReader(f)]


def _parse(value: str | None) -> Any:
    if value is None or value == "":
        return value
    if value in ("True", "true"):
        return True
    if value in ("False", "false"):
        return False
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def finite(value: Any) -> bool:
    """A real number that is not NaN or infinite (CSV cells may be '' or text)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def label(row: dict[str, Any]) -> str:
    """A short name for a model row: B3, ResNet-50, phi=1.5, depth_2x."""
    model, name = str(row["model"]), str(row.get("name", ""))
    if model.startswith("efficientnet_b"):
        return model.removeprefix("efficientnet_").upper()
    if model in BASELINE_LABELS:
        return BASELINE_LABELS[model]
    if model == "efficientnet_phi":
        return f"phi={name.removeprefix('efficientnet_phi')}" if name.startswith("efficientnet_phi") else "phi"
    return model.rsplit("/", 1)[-1]


def _percent(value: Any) -> float | str:
    return round(100.0 * value, 4) if finite(value) else ""


def figure1_rows(models: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of Figure 1: EfficientNet B0-B7 (by parameters), the baselines, the phi model."""
    rows = []
    for row in models:
        if row.get("group") == "matrix":
            family = "efficientnet" if str(row["model"]).startswith("efficientnet_") else "baseline"
        elif row.get("group") == "phi":
            family = "efficientnet_phi"
        else:
            continue
        accuracy = _percent(row.get(ACCURACY))
        rows.append({"model": row["model"], "label": label(row), "family": family,
                     "params_m": row["params"] / 1e6, "flops_g": row["flops"] / 1e9, "test_top1": accuracy,
                     **{f: (accuracy if f == family else "") for f in ("efficientnet", "baseline", "efficientnet_phi")}})
    order = {"efficientnet": 0, "baseline": 1, "efficientnet_phi": 2}
    return sorted(rows, key=lambda r: (order[r["family"]], r["params_m"]))


def val_vs_test_rows(models: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model: validation and test top-1 (EMA), the test value repeated in its group's column."""
    rows = []
    for row in models:
        test = _percent(row.get(ACCURACY))
        group = row.get("group", "")
        rows.append({"model": row["model"], "label": label(row), "group": group,
                     "val_top1": _percent(row.get("val/top1_ema")), "test_top1": test,
                     **{g: (test if g == group else "") for g in ("matrix", "phi", "scaling")}})
    return rows


def scaling_rows(models: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Figure 3 / 8: per strategy, the baseline B0 then its scaled models by FLOPs.

    The baseline row is repeated in every strategy, so that each line starts there.
    """
    study = [r for r in models if r.get("group") == "scaling"]
    baseline = next((r for r in study if r.get("strategy") == "baseline"), None)
    base_flops = baseline["flops"] if baseline else None
    rows = []
    for strategy in STRATEGIES:
        members = sorted((r for r in study if r.get("strategy") == strategy), key=lambda r: r["flops"])
        if not members:
            continue
        for row in ([baseline] if baseline else []) + members:
            accuracy = _percent(row.get(ACCURACY))
            rows.append({"strategy": strategy, "model": row["model"], "target": row.get("target") or 1.0,
                         "flops_g": row["flops"] / 1e9, "flops_ratio": row["flops"] / base_flops if base_flops else "",
                         "params_m": row["params"] / 1e6, "test_top1": accuracy,
                         **{s: (accuracy if s == strategy else "") for s in STRATEGIES}})
    return rows


def read_dvclive_series(run_dir: Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `metric` (e.g. 'val/top1') from a DVCLive directory; empty when not logged."""
    path = Path(run_dir) / "plots" / "metrics" / f"{metric}.tsv"
    if not path.is_file():
        return np.array([]), np.array([])
    lines = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    if len(lines) < 2:
        return np.array([]), np.array([])
    header = lines[0]
    step_col = header.index("step") if "step" in header else 0
    value_col = next((i for i, h in enumerate(header) if h not in ("step", "timestamp")), len(header) - 1)
    data = np.array([[float(r[step_col]), float(r[value_col])] for r in lines[1:]])
    return data[:, 0], data[:, 1]


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


def _natural(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


# --------------------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------------------


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported here, not at module level)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """Save a matplotlib figure atomically (temporary file in the same directory, then rename) and close it."""
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight"))
    finally:
        pyplot().close(fig)


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


def plot_figure1(rows: Sequence[dict[str, Any]], x: str, path: Path) -> None:
    """Figure 1: test top-1 against `x` ('params_m' or 'flops_g'), log scale."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    effnets = [r for r in rows if r["family"] == "efficientnet" and finite(r["test_top1"])]
    if effnets:
        effnets = sorted(effnets, key=lambda r: r[x])
        ax.plot([r[x] for r in effnets], [r["test_top1"] for r in effnets], "o-", color="tab:red", lw=2,
                label="EfficientNet B0-B7")
    for family, marker, color, name in (("baseline", "s", "tab:blue", "baselines (CIFAR stems)"),
                                        ("efficientnet_phi", "*", "tab:purple", "EfficientNet at model.phi")):
        points = [r for r in rows if r["family"] == family and finite(r["test_top1"])]
        if points:
            ax.scatter([r[x] for r in points], [r["test_top1"] for r in points], marker=marker, s=70, color=color,
                       label=name, zorder=3)
    for r in rows:
        if finite(r["test_top1"]):
            ax.annotate(r["label"], (r[x], r["test_top1"]), textcoords="offset points", xytext=(5, -10), fontsize=8)
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("parameters (millions, log scale)" if x == "params_m" else "FLOPs (billions of multiply-adds, log scale)")
    ax.set_ylabel("CIFAR-100 test top-1 (%), EMA weights")
    ax.set_title(f"Model size vs. accuracy (cf. paper Figure 1{'' if x == 'params_m' else ', FLOPs'})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def plot_val_vs_test(rows: Sequence[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    points = [r for r in rows if finite(r["val_top1"]) and finite(r["test_top1"])]
    colors = {"matrix": "tab:red", "phi": "tab:purple", "scaling": "tab:green", "other": "tab:gray"}
    for group, color in colors.items():
        members = [r for r in points if r["group"] == group]
        if members:
            ax.scatter([r["val_top1"] for r in members], [r["test_top1"] for r in members], color=color, label=group, zorder=3)
    for r in points:
        ax.annotate(r["label"], (r["val_top1"], r["test_top1"]), textcoords="offset points", xytext=(4, -9), fontsize=7)
    values = [v for r in points for v in (r["val_top1"], r["test_top1"])]
    low, high = (min(values) - 1, max(values) + 1) if values else (0, 100)
    ax.plot([low, high], [low, high], "k--", lw=1, label="y = x")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("validation top-1 (%), 5,000 images held out of train")
    ax.set_ylabel("test top-1 (%), the official 10,000")
    ax.set_title("Validation vs. test accuracy (EMA weights)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_scaling(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Figure 3 / 8: one line per strategy, x = FLOPs."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for strategy in STRATEGIES:
        line = [r for r in rows if r["strategy"] == strategy and finite(r["test_top1"])]
        if line:
            ax.plot([r["flops_g"] for r in line], [r["test_top1"] for r in line], "o-", color=COLORS[strategy],
                    lw=2.5 if strategy == "compound" else 1.5, label=f"scale {strategy}" if strategy != "compound"
                    else "compound scaling")
            for r in line[1:]:
                ratio = f"{r['flops_ratio']:.1f}x" if finite(r["flops_ratio"]) else str(r["model"])
                ax.annotate(ratio, (r["flops_g"], r["test_top1"]), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=COLORS[strategy])
    baseline = next((r for r in rows if str(r["model"]).endswith("baseline")), None)
    if baseline and finite(baseline["test_top1"]):
        ax.annotate("B0", (baseline["flops_g"], baseline["test_top1"]), textcoords="offset points", xytext=(-16, 4),
                    fontsize=8)
    ax.set_xlabel("FLOPs (billions of multiply-adds)")
    ax.set_ylabel("CIFAR-100 test top-1 (%), EMA weights")
    ax.set_title("Scaling B0 by one dimension vs. compound (cf. paper Figures 3 and 8)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_search(candidates: Sequence[dict[str, Any]], path: Path) -> None:
    """The grid search: (beta, gamma) coloured by val top-1 with alpha written in, and val top-1 against FLOPs."""
    plt = pyplot()
    ok = [r for r in candidates if finite(r.get("val_top1"))]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    accuracy = np.array([100 * r["val_top1"] for r in ok])
    points = left.scatter([r["beta"] for r in ok], [r["gamma"] for r in ok], c=accuracy, cmap="viridis", s=90,
                          edgecolors="k", linewidths=0.5, zorder=3)
    fig.colorbar(points, ax=left, label="validation top-1 (%)")
    for r in ok:
        left.annotate(f"a={r['alpha']:g}", (r["beta"], r["gamma"]), textcoords="offset points", xytext=(6, 3), fontsize=7)
    right.scatter([r.get("flops_ratio", np.nan) for r in ok], accuracy, color="tab:gray", zorder=3)
    for ax, x in ((left, "beta"), (right, "flops_ratio")):
        for key, style in (("chosen", dict(s=260, facecolors="none", edgecolors="tab:red", linewidths=2, label="chosen")),
                           ("paper", dict(s=180, marker="*", color="gold", edgecolors="k", label="paper (1.2, 1.1, 1.15)"))):
            marked = [r for r in ok if r.get(key) is True]
            if marked:
                y = [r["gamma"] for r in marked] if ax is left else [100 * r["val_top1"] for r in marked]
                ax.scatter([r.get(x, np.nan) for r in marked], y, zorder=4, **style)
        ax.grid(True, alpha=0.3)
    left.margins(0.12)
    left.set_xlabel("beta (width)")
    left.set_ylabel("gamma (resolution)")
    left.set_title(f"{len(ok)} candidates with alpha * beta^2 * gamma^2 ~ 2 (alpha = depth)")
    right.set_xlabel("FLOPs of B0 scaled at phi = 1, relative to B0")
    right.set_ylabel("validation top-1 (%)")
    right.set_title("Short-budget validation accuracy per candidate")
    left.legend(fontsize=8, loc="best")
    save_figure(fig, path)


def plot_training_curves(runs: Sequence[tuple[str, Path]], path: Path, columns: int = 4) -> None:
    """One small panel per run: val top-1 raw and EMA (left axis, %), train loss (right axis)."""
    plt = pyplot()
    rows = math.ceil(len(runs) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.6 * rows), squeeze=False)
    for ax, (name, run_dir) in zip(axes.flat, runs):
        for metric, style, text in (("val/top1", "-", "val top-1"), ("val/top1_ema", "--", "val top-1 EMA")):
            steps, values = read_dvclive_series(run_dir, metric)
            if len(steps):
                ax.plot(steps + 1, 100 * values, style, label=text)
        ax.set_ylabel("top-1 (%)", fontsize=7)
        steps, loss = read_dvclive_series(run_dir, "train/loss")
        if len(steps):
            twin = ax.twinx()
            twin.plot(steps + 1, loss, color="tab:gray", lw=1, label="train loss")
            twin.tick_params(labelsize=6)
            twin.set_ylabel("train loss", fontsize=7, color="tab:gray")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles + [plt.Line2D([], [], color="tab:gray")], labels + ["train loss"], loc="upper center",
                   ncol=3, fontsize=8, bbox_to_anchor=(0.5, 1.02))
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def plot_cam_faithfulness(rows: Sequence[dict[str, Any]], path: Path, reference: str = "random") -> None:
    """Per CAM method: ROAD combined and the CamMult confidence change against FLOPs, one line per strategy."""
    plt = pyplot()
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != reference]
    metrics = (("road_combined", "ROAD combined\n(LeRF - MoRF) / 2"), ("cam_mult_confidence_change",
                                                                      "confidence change,\nimage x map"))
    fig, axes = plt.subplots(len(metrics), len(methods), figsize=(4.2 * len(methods), 3.2 * len(metrics)), squeeze=False)
    baseline = [r for r in rows if r["strategy"] == "baseline"]
    for c, method in enumerate(methods):
        for r_index, (key, text) in enumerate(metrics):
            ax = axes[r_index, c]
            for strategy in STRATEGIES:
                line = sorted([r for r in baseline if r["method"] == method] +
                              [r for r in rows if r["strategy"] == strategy and r["method"] == method],
                              key=lambda r: r["flops_ratio"])
                if len(line) > (1 if baseline else 0):
                    ax.plot([r["flops_ratio"] for r in line], [r[key] for r in line], "o-", color=COLORS[strategy],
                            label=strategy)
            floor = [r for r in rows if r["method"] == reference]
            if floor:
                ax.scatter([r["flops_ratio"] for r in floor], [r[key] for r in floor], marker="x", color="tab:gray",
                           label=f"{reference} map")
            ax.axhline(0, color="k", lw=0.5)
            ax.set_title(method if r_index == 0 else "", fontsize=9)
            ax.set_xlabel("FLOPs relative to B0", fontsize=8)
            ax.set_ylabel(text, fontsize=8)
            ax.grid(True, alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Faithfulness of the maps of the scaling study (higher is better; true-class probability)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------


def make_plots(*, models_table: Path, search_table: Path, cam_table: Path, dvclive_dir: Path, out_dir: Path,
               log: Callable[[str], Any] = print) -> dict[str, Path]:
    """Write every CSV and PNG of the plots stage into `out_dir`; return {name: path}.

    Inputs that are missing or empty give a header-only CSV and a placeholder PNG, with a
    note through `log`.
    """
    out_dir = Path(out_dir)
    models = [r for r in read_table(models_table) if finite(r.get("params")) and finite(r.get("flops"))]
    written: dict[str, Path] = {}

    def emit(name: str, rows: list[dict[str, Any]] | None, columns: Sequence[str] | None,
             draw: Callable[[Path], None], missing: str) -> None:
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

    figure1 = figure1_rows(models)
    no_matrix = f"no matrix or phi models in {models_table}"
    emit("accuracy_vs_params", figure1, FIGURE1_COLUMNS, lambda p: plot_figure1(figure1, "params_m", p), no_matrix)
    emit("accuracy_vs_flops", figure1, FIGURE1_COLUMNS, lambda p: plot_figure1(figure1, "flops_g", p), no_matrix)
    val_test = val_vs_test_rows(models)
    emit("val_vs_test", val_test, VAL_TEST_COLUMNS, lambda p: plot_val_vs_test(val_test, p), f"no models in {models_table}")
    scaling = scaling_rows(models)
    emit("scaling", scaling, SCALING_COLUMNS, lambda p: plot_scaling(scaling, p),
         f"no scaling-study models in {models_table}")
    candidates = [r for r in read_table(search_table) if finite(r.get("val_top1"))]
    emit("search", candidates, None, lambda p: plot_search(candidates, p), f"no search results in {search_table}")
    runs = dvclive_runs(dvclive_dir, only=[str(r["model"]) for r in read_table(models_table)])
    emit("training_curves", runs, None, lambda p: plot_training_curves(runs, p),
         f"no DVCLive runs of the models in {models_table} below {dvclive_dir}")
    faithfulness = [r for r in read_table(cam_table) if finite(r.get("road_combined")) and finite(r.get("flops_ratio"))]
    emit("cam_faithfulness", faithfulness, None, lambda p: plot_cam_faithfulness(faithfulness, p),
         f"no faithfulness results in {cam_table}")
    return written
