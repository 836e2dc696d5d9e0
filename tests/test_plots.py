"""The plots stage: every declared CSV and PNG written, with the expected series, from fabricated results.

`write_results` fabricates what the earlier stages leave behind (metrics/models.csv,
plots/search.csv, plots/cam_faithfulness.csv, dvclive/) in a project directory; the report
tests use it too.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from effnet import plots
from effnet.cam import TABLE_COLUMNS as CAM_COLUMNS
from effnet.evaluate import COLUMNS, accuracy_keys
from effnet.io import write_csv
from effnet.plots import (
    FIGURE1_COLUMNS,
    VAL_TEST_COLUMNS,
    dvclive_runs,
    make_plots,
    read_dvclive_series,
    read_table,
    scaling_columns,
)
from effnet.study import BASELINES, EFFICIENTNETS, strategy_names

ROOT = Path(__file__).resolve().parents[1]
PNGS = (
    "accuracy_vs_params",
    "accuracy_vs_flops",
    "val_vs_test",
    "scaling",
    "search",
    "training_curves",
    "cam_faithfulness",
)
CSVS = ("accuracy_vs_params", "accuracy_vs_flops", "val_vs_test", "scaling", "training_curves")
TARGETS = (2.0, 4.0)


def _model_row(model: str, group: str, params: float, flops: float, top1: float, **extra) -> dict:
    row = {key: "" for key in COLUMNS}
    row.update(
        model=model,
        name=model.rsplit("/", 1)[-1],
        group=group,
        arch="efficientnet",
        width=1.0,
        depth=1.0,
        resolution=32,
        params=int(params),
        flops=int(flops),
        throughput_images_per_s=1000.0,
        train_time_s=60.0,
        epochs=1,
        has_ema=True,
        device="cpu",
    )
    row.update(extra)
    for split in ("val", "test"):
        for key in accuracy_keys(split):
            row[key] = min(1.0, top1 + (0.1 if "top5" in key else 0.0) + (0.01 if split == "val" else 0.0))
        row[f"{split}/images"] = 200
    return row


def write_results(root: Path, *, phi_name: str = "efficientnet_phi1.5") -> None:
    """Fabricated outputs of the search, train, evaluate and cam stages under `root`."""
    rows = []
    for i, name in enumerate(m.name for m in EFFICIENTNETS):
        rows.append(_model_row(name, "matrix", 4e6 * 1.5**i, 1.2e8 * 2**i, 0.5 + 0.02 * i))
    for i, name in enumerate(m.name for m in BASELINES):
        rows.append(_model_row(name, "matrix", 2e7 + 2e7 * i, 1.3e9 * (1 + i), 0.55))
    rows.append(_model_row("efficientnet_phi", "phi", 5e6, 2e8, 0.52, name=phi_name))
    rows.append(_model_row("scaling/baseline", "scaling", 4e6, 1.2e8, 0.4, strategy="baseline", target=1.0))
    for s, strategy in enumerate(strategy_names()):
        for target in TARGETS:
            rows.append(
                _model_row(
                    f"scaling/{strategy}_{target:g}x",
                    "scaling",
                    4e6 * target,
                    1.2e8 * target,
                    0.4 + 0.01 * s * target,
                    strategy=strategy,
                    target=target,
                )
            )
    write_csv(root / "metrics" / "models.csv", rows, COLUMNS)

    search = [
        {
            "alpha": a,
            "beta": b,
            "gamma": g,
            "constraint": a * b * b * g * g,
            "resolution": 36,
            "params": 5e6,
            "flops": 2.4e8,
            "flops_ratio": 2.0,
            "val_top1": v,
            "val_top1_ema": v,
            "train_time_s": 10.0,
            "paper": (a, b, g) == (1.2, 1.1, 1.15),
            "chosen": v == 0.3,
        }
        for (a, b, g), v in (((1.2, 1.1, 1.15), 0.2), ((1.4, 1.0, 1.2), 0.3), ((1.0, 1.2, 1.2), 0.1))
    ]
    write_csv(root / "plots" / "search.csv", search, list(search[0]))

    cam = []
    for model, strategy, target in [("baseline", "baseline", 1.0)] + [
        (f"{s}_{t:g}x", s, t) for s in strategy_names() for t in TARGETS
    ]:
        for method in ("gradcam", "gradcam++", "random"):
            cam.append(
                {
                    "model": model,
                    "strategy": strategy,
                    "target": target,
                    "flops_ratio": target,
                    "method": method,
                    "road_morf": -0.1,
                    "road_lerf": 0.0,
                    "road_combined": 0.05 if method != "random" else 0.0,
                    "cam_mult_confidence_change": 0.01,
                    "top1": 0.3,
                    "confidence": 0.3,
                    "images": 16,
                    "label": f"{model} {method}",
                }
            )
    write_csv(root / "plots" / "cam_faithfulness.csv", cam, CAM_COLUMNS)

    for run in ("efficientnet_b0", "resnet50", "scaling/depth_2x"):
        for metric, values in (
            ("val/top1", (0.1, 0.2, 0.3)),
            ("val/top1_ema", (0.05, 0.15, 0.3)),
            ("train/loss", (4.0, 3.0, 2.5)),
        ):
            path = root / "dvclive" / run / "plots" / "metrics" / f"{metric}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            leaf = metric.rsplit("/", 1)[-1]
            path.write_text(
                f"timestamp\tstep\t{leaf}\n" + "".join(f"{1000 + i}\t{i}\t{v}\n" for i, v in enumerate(values))
            )


def _csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_figure_has_its_series(tmp_path: Path) -> None:
    write_results(tmp_path)
    written = make_plots(
        models_table=tmp_path / "metrics" / "models.csv",
        search_table=tmp_path / "plots" / "search.csv",
        cam_table=tmp_path / "plots" / "cam_faithfulness.csv",
        dvclive_dir=tmp_path / "dvclive",
        out_dir=tmp_path / "plots",
        log=pytest.fail,
    )  # any note means something was not drawn
    assert set(written) == {f"{n}.png" for n in PNGS} | {f"{n}.csv" for n in CSVS}
    for name in PNGS:
        assert _is_png(tmp_path / "plots" / f"{name}.png"), name

    for name in ("accuracy_vs_params", "accuracy_vs_flops"):
        rows = _csv(tmp_path / "plots" / f"{name}.csv")
        assert list(rows[0]) == list(FIGURE1_COLUMNS)
        assert [r["label"] for r in rows if r["family"] == "efficientnet"] == [f"B{i}" for i in range(8)]
        assert sorted(r["label"] for r in rows if r["family"] == "baseline") == [
            "DenseNet-201",
            "ResNet-152",
            "ResNet-50",
        ]
        assert [r["label"] for r in rows if r["family"] == "efficientnet_phi"] == ["phi=1.5"]
        for r in rows:  # the series columns: the accuracy in its own family's column only
            assert r[r["family"]] == r["test_top1"] != ""
            assert sum(r[f] != "" for f in ("efficientnet", "baseline", "efficientnet_phi")) == 1
        assert float(rows[0]["test_top1"]) == pytest.approx(50.0)  # percent, of the EMA weights

    val_test = _csv(tmp_path / "plots" / "val_vs_test.csv")
    assert list(val_test[0]) == list(VAL_TEST_COLUMNS) and len(val_test) == 8 + 3 + 1 + 1 + 4 * len(TARGETS)

    scaling = _csv(tmp_path / "plots" / "scaling.csv")
    assert list(scaling[0]) == list(scaling_columns())
    assert sorted({r["strategy"] for r in scaling}) == sorted(strategy_names())
    for strategy in strategy_names():
        line = [r for r in scaling if r["strategy"] == strategy]
        # every line starts at B0
        assert line[0]["model"] == "scaling/baseline" and float(line[0]["flops_ratio"]) == 1.0
        assert [float(r["target"]) for r in line] == [1.0, *TARGETS]
        assert all(r[strategy] == r["test_top1"] for r in line)


def test_figures_draw_each_models_interval_from_its_predictions(tmp_path: Path, drawn: dict) -> None:
    """Per-image predictions (2 seeds, 100 and 110 of 200 images right) give B0's bar in Figure 1 and depth_2x's in
    the scaling figure; models without any have none."""
    import numpy as np

    from effnet.results import Predictions, save_predictions
    from effnet.stats import accuracy_interval

    write_results(tmp_path)
    labels = np.arange(200) % 100
    top1 = np.stack(
        [
            np.where(np.arange(200) < 100, labels, (labels + 1) % 100),
            np.where(np.arange(200) >= 90, labels, (labels + 1) % 100),
        ]
    )  # 100 and 110 of 200 right
    for model in ("efficientnet_b0", "scaling/depth_2x"):
        save_predictions(
            tmp_path / "predictions" / f"{model}.npz",
            Predictions(top1=top1, top1_ema=top1, labels=labels, test_set="t", has_ema=True),
        )
    make_plots(
        models_table=tmp_path / "metrics" / "models.csv",
        search_table=tmp_path / "plots" / "search.csv",
        cam_table=tmp_path / "plots" / "cam_faithfulness.csv",
        dvclive_dir=tmp_path / "dvclive",
        out_dir=tmp_path / "plots",
        log=pytest.fail,
        predictions_dir=tmp_path / "predictions",
    )
    low, high = accuracy_interval(top1 == labels)
    rows = {r["model"]: r for r in _csv(tmp_path / "plots" / "accuracy_vs_flops.csv")}
    b0 = rows.pop("efficientnet_b0")
    assert (float(b0["test_top1_low"]), float(b0["test_top1_high"])) == pytest.approx((100 * low, 100 * high))
    assert 40 < 100 * low < 52.5 < 100 * high < 65  # around the predictions' 52.5%, seeds and images resampled
    assert all(r["test_top1_low"] == r["test_top1_high"] == "" for r in rows.values())
    scaling = _csv(tmp_path / "plots" / "scaling.csv")
    depth = [r for r in scaling if r["model"] == "scaling/depth_2x"]
    assert [(float(r["test_top1_low"]), float(r["test_top1_high"])) for r in depth] == [
        pytest.approx((100 * low, 100 * high))
    ]
    assert all(r["test_top1_low"] == "" for r in scaling if r["model"] != "scaling/depth_2x")
    for name in ("accuracy_vs_flops", "scaling"):
        figure = drawn[name]
        bars = [c for c in figure.axes[0].collections if type(c).__name__ == "LineCollection"]
        assert len(bars) == 1 and "bars: 95% bootstrap interval" in figure.axes[0].get_title(), name
        assert _overlaps(figure) == [], name


def test_the_faithfulness_figure_shows_b0_before_any_scaled_model(tmp_path: Path, drawn: dict) -> None:
    """Only B0's maps drawn yet (the first chain of the scaling study): each panel still shows B0's value."""
    write_results(tmp_path)
    table = tmp_path / "plots" / "cam_faithfulness.csv"
    write_csv(table, [r for r in read_table(table) if r["strategy"] == "baseline"], CAM_COLUMNS)
    make_plots(
        models_table=tmp_path / "metrics" / "models.csv",
        search_table=tmp_path / "plots" / "search.csv",
        cam_table=table,
        dvclive_dir=tmp_path / "dvclive",
        out_dir=tmp_path / "plots",
        log=pytest.fail,
    )
    panels = drawn["cam_faithfulness"].axes
    assert len(panels) == 4  # 2 methods x 2 measures
    for ax in panels:
        points = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
        assert points["B0"] in ([[1.0, 0.05]], [[1.0, 0.01]])  # road_combined or the confidence change
        assert points["random map"] in ([[1.0, 0.0]], [[1.0, 0.01]])


def test_missing_inputs_give_placeholders_and_header_only_csvs(tmp_path: Path) -> None:
    notes = []
    make_plots(
        models_table=tmp_path / "none.csv",
        search_table=tmp_path / "none.csv",
        cam_table=tmp_path / "none.csv",
        dvclive_dir=tmp_path / "none",
        out_dir=tmp_path / "plots",
        log=notes.append,
    )
    assert len(notes) == len(PNGS)
    for name in PNGS:
        assert _is_png(tmp_path / "plots" / f"{name}.png")
    for name in CSVS:
        assert (tmp_path / "plots" / f"{name}.csv").read_text().count("\n") == 1  # the header


def test_only_the_matrix_trained(tmp_path: Path) -> None:
    """No scaling study, no phi model yet: Figure 1 from what exists, the scaling figure a placeholder."""
    write_results(tmp_path)
    table = tmp_path / "metrics" / "models.csv"
    rows = [r for r in read_table(table) if r["group"] == "matrix"]
    write_csv(table, rows, COLUMNS)
    notes = []
    make_plots(
        models_table=table,
        search_table=tmp_path / "plots" / "search.csv",
        cam_table=tmp_path / "plots" / "cam_faithfulness.csv",
        dvclive_dir=tmp_path / "dvclive",
        out_dir=tmp_path / "plots",
        log=notes.append,
    )
    assert len(notes) == 1 and "scaling" in notes[0]
    assert len(_csv(tmp_path / "plots" / "accuracy_vs_params.csv")) == 11


def test_dvclive_series(tmp_path: Path) -> None:
    write_results(tmp_path)
    steps, values = read_dvclive_series(tmp_path / "dvclive" / "scaling" / "depth_2x", "val/top1_ema")
    assert steps.tolist() == [0, 1, 2] and values.tolist() == [0.05, 0.15, 0.3]
    assert read_dvclive_series(tmp_path / "dvclive" / "resnet50", "lr")[0].size == 0


def test_training_curves_as_one_long_table(tmp_path: Path) -> None:
    """plots/training_curves.csv, what dvc.yaml's two training plots draw: a row per evaluated run and epoch."""
    write_results(tmp_path)
    make_plots(
        models_table=tmp_path / "metrics" / "models.csv",
        search_table=tmp_path / "plots" / "search.csv",
        cam_table=tmp_path / "plots" / "cam_faithfulness.csv",
        dvclive_dir=tmp_path / "dvclive",
        out_dir=tmp_path / "plots",
        log=lambda *_: None,
    )
    rows = _csv(tmp_path / "plots" / "training_curves.csv")
    assert list(rows[0]) == ["model", "epoch", "val_top1", "val_top1_ema", "train_loss"]
    assert [(r["model"], r["epoch"]) for r in rows] == [
        (m, str(e)) for m in ("efficientnet_b0", "resnet50", "scaling/depth_2x") for e in (1, 2, 3)
    ]
    assert [float(r["val_top1"]) for r in rows[:3]] == [10.0, 20.0, 30.0]  # percent, as the PNG
    assert [float(r["val_top1_ema"]) for r in rows[:3]] == [5.0, 15.0, 30.0]
    assert [float(r["train_loss"]) for r in rows[:3]] == [4.0, 3.0, 2.5]
    plots_of_dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    curves = [
        p
        for entry in plots_of_dvc_yaml
        if isinstance(entry, dict)
        for p in entry.values()
        if "plots/training_curves.csv" in p.get("y", {})
    ]
    assert {p["y"]["plots/training_curves.csv"] for p in curves} == {"val_top1", "train_loss"}
    assert all(p["x"] == "epoch" and p["template"] == "lines_by_model" for p in curves)
    for name, column in (("lines_by_model", "model"), ("lines_by_strategy", "strategy")):
        template = json.loads((ROOT / ".dvc" / "plots" / f"{name}.json").read_text())
        assert template["encoding"]["color"]["field"] == column  # one line per model (strategy) of the long table
    scaling_plot = next(
        p
        for entry in plots_of_dvc_yaml
        if isinstance(entry, dict)
        for p in entry.values()
        if "plots/scaling.csv" in p.get("y", {})
    )
    assert scaling_plot["template"] == "lines_by_strategy" and scaling_plot["y"]["plots/scaling.csv"] == "test_top1"
    assert not any("dvclive/" in str(y) for p in plots_of_dvc_yaml if isinstance(p, dict) for y in p.values())


def test_training_curves_only_of_evaluated_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DVCLive run left by an earlier run (another FLOPs target) is not drawn beside this run's."""
    write_results(tmp_path)
    stale = tmp_path / "dvclive" / "scaling" / "depth_8x" / "plots" / "metrics" / "val"
    stale.mkdir(parents=True)
    (stale / "top1.tsv").write_text("timestamp\tstep\ttop1\n1000\t0\t0.9\n")
    assert "scaling/depth_8x" in dict(dvclive_runs(tmp_path / "dvclive"))
    drawn = []
    monkeypatch.setattr(plots, "plot_training_curves", lambda runs, path: drawn.append([name for name, _ in runs]))
    make_plots(
        models_table=tmp_path / "metrics" / "models.csv",
        search_table=tmp_path / "plots" / "search.csv",
        cam_table=tmp_path / "plots" / "cam_faithfulness.csv",
        dvclive_dir=tmp_path / "dvclive",
        out_dir=tmp_path / "plots",
        log=lambda *_: None,
    )
    assert drawn == [["efficientnet_b0", "resnet50", "scaling/depth_2x"]]


def test_stage(tmp_path: Path) -> None:
    write_results(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "plots.py")], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert _is_png(tmp_path / "plots" / "scaling.png")
    (tmp_path / "params.yaml").write_text("plots: {}\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "plots.py")], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stderr.startswith("error: ")


# --------------------------------------------------------------------------------------
# readability: no two texts overlap, legends outside the data, markers on every curve
# --------------------------------------------------------------------------------------


# The table of an earlier CPU run of every model (11 matrix models, phi, 13 scaling models, nearly all at 1%): a run
# with every figure's models, kept as test data when the committed run became the small study, whose models arrive
# chain by chain.
FULL_TABLE = Path(__file__).resolve().parent / "data" / "cpu_run_models.csv"


def _committed_run(root: Path) -> None:
    """An earlier full run's tables (11 matrix models, phi, 13 scaling models, nearly all at 1%) under `root`."""
    write_results(root)  # the search, cam and dvclive fixtures
    (root / "metrics" / "models.csv").write_text((FULL_TABLE).read_text())


def _crowded(root: Path) -> None:
    """Every model at exactly the same accuracy, close in size: the worst case for labels."""
    write_results(root)
    table = root / "metrics" / "models.csv"
    rows = read_table(table)
    for i, row in enumerate(rows):
        for key in accuracy_keys("val") + accuracy_keys("test"):
            row[key] = 0.01
        row["params"], row["flops"] = int(4e6 * 1.05**i), int(3e7 * 1.05**i)
    write_csv(table, rows, COLUMNS)


def _texts(fig) -> list:
    """Every text drawn in a figure with its box in pixels: tick labels, legends, titles, annotations, table cells.

    Tick labels are taken only for ticks inside the axis' view (matplotlib keeps, but does not
    draw, the labels of ticks beyond the limits).
    """
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    tick_labels, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for ticks, locations in (
                (axis.get_major_ticks(), axis.get_majorticklocs()),
                (axis.get_minor_ticks(), axis.get_minorticklocs()),
            ):
                for tick, location in zip(ticks, locations, strict=False):  # matplotlib may keep spare ticks
                    labels = (tick.label1, tick.label2)
                    tick_labels.update(id(t) for t in labels)
                    span = (high - low) * 1e-9
                    if ax.get_visible() and axis.get_visible() and low - span <= location <= high + span:
                        drawn += [t for t in labels if t.get_visible()]
    texts = [
        t
        for t in fig.findobj(Text)
        if id(t) not in tick_labels and t.get_visible() and (t.axes is None or t.axes.get_visible())
    ] + drawn
    found = []
    for text in texts:
        box = Text.get_window_extent(text, renderer)  # the text alone, not an annotation's leader line
        if text.get_text().strip() and box.width > 0 and box.height > 0:
            found.append((text.get_text(), box))
    return found


def _overlaps(fig) -> list[tuple[str, str]]:
    texts = _texts(fig)
    pairs = []
    for i, (a, box_a) in enumerate(texts):
        for b, box_b in texts[i + 1 :]:
            width = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            height = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if width > 0.5 and height > 0.5:  # more than touching
                pairs.append((a, b))
    return pairs


@pytest.fixture()
def drawn(monkeypatch: pytest.MonkeyPatch):
    """make_plots with save_figure intercepted: {png name: figure}, figures kept open for inspection."""
    figures: dict = {}

    def keep(fig, path: Path, dpi: int = 110) -> None:
        figures[Path(path).stem] = fig

    monkeypatch.setattr(plots, "save_figure", keep)
    yield figures
    plots.pyplot().close("all")


@pytest.mark.parametrize("fixture", [_committed_run, _crowded, write_results])
def test_no_two_texts_overlap(tmp_path: Path, drawn: dict, fixture) -> None:
    fixture(tmp_path)
    make_plots(
        models_table=tmp_path / "metrics" / "models.csv",
        search_table=tmp_path / "plots" / "search.csv",
        cam_table=tmp_path / "plots" / "cam_faithfulness.csv",
        dvclive_dir=tmp_path / "dvclive",
        out_dir=tmp_path / "plots",
        log=pytest.fail,
    )
    assert set(drawn) == set(PNGS)
    for name, fig in drawn.items():
        assert _overlaps(fig) == [], name
    # every model of the table is named somewhere in Figure 1 and in the val/test figure
    texts = " ".join(t for t, _ in _texts(drawn["val_vs_test"]))
    for row in read_table(tmp_path / "metrics" / "models.csv"):
        assert plots.label(row) in texts, plots.label(row)


def test_overlap_check_can_fail(drawn: dict) -> None:
    """The check itself: two labels written on the same spot are reported."""
    plt = plots.pyplot()
    fig, ax = plt.subplots()
    ax.annotate("B0", (1, 1))
    ax.annotate("B1", (1, 1))
    assert ("B0", "B1") in _overlaps(fig)


def test_place_labels_separates_coincident_and_close_points() -> None:
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(range(10), [1.0] * 10, "o")
    ax.set_xlim(-1, 10)
    ax.set_ylim(0, 2)
    points = [(i, 1.0, f"model-{i}", "k") for i in range(10)] + [(3, 1.0, "twin-of-3", "k")]
    annotations = plots.place_labels(ax, points)
    assert len(annotations) == 10  # the two labels of x = 3 share one annotation
    assert "model-3, twin-of-3" in [a.get_text().replace("\n", " ") for a in annotations]
    assert _overlaps(fig) == []
    plt.close(fig)


def test_legends_outside_the_data(tmp_path: Path, drawn: dict) -> None:
    _committed_run(tmp_path)
    make_plots(
        models_table=tmp_path / "metrics" / "models.csv",
        search_table=tmp_path / "plots" / "search.csv",
        cam_table=tmp_path / "plots" / "cam_faithfulness.csv",
        dvclive_dir=tmp_path / "dvclive",
        out_dir=tmp_path / "plots",
        log=pytest.fail,
    )
    for name, fig in drawn.items():
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legends = [a.get_legend() for a in fig.axes if a.get_legend()] + list(fig.legends)
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                if ax.get_visible() and ax.has_data() and ax.axison:
                    assert not box.overlaps(ax.get_window_extent(renderer)), name


def test_curves_have_markers(tmp_path: Path, drawn: dict) -> None:
    """A one-epoch run is one point per series: without markers its panel would look empty."""
    write_results(tmp_path)
    for path in (tmp_path / "dvclive").glob("**/*.tsv"):
        lines = path.read_text().splitlines()
        path.write_text("\n".join(lines[:2]) + "\n")  # the header and the first epoch only
    make_plots(
        models_table=tmp_path / "metrics" / "models.csv",
        search_table=tmp_path / "plots" / "search.csv",
        cam_table=tmp_path / "plots" / "cam_faithfulness.csv",
        dvclive_dir=tmp_path / "dvclive",
        out_dir=tmp_path / "plots",
        log=pytest.fail,
    )
    for name in ("training_curves", "scaling", "accuracy_vs_params", "cam_faithfulness"):
        lines = [
            line
            for ax in drawn[name].axes
            for line in ax.get_lines()
            if len(line.get_xdata())
            and line.get_label() not in ("y = x",)
            and not line.get_label().startswith("_child")
        ]
        curves = [line for line in lines if line.get_linestyle() not in ("None", "")]
        assert curves, name
        for line in curves:
            if line.get_xdata().size and line.get_xydata().std(axis=0).sum() == 0 and len(line.get_xdata()) > 1:
                continue  # a reference line
            assert line.get_marker() not in (None, "None", "", " "), (name, line.get_label())
    panels = [ax for ax in drawn["training_curves"].axes if ax.get_lines()]
    assert len(panels) >= 3 and all(len(line.get_xdata()) == 1 for ax in panels for line in ax.get_lines())


def test_labels_say_what_was_scored(tmp_path: Path) -> None:
    """No hard-coded '5,000 images' or 'EMA weights': both read from the models table."""
    write_results(tmp_path)
    rows = read_table(tmp_path / "metrics" / "models.csv")
    assert plots.scored(rows) == plots.Scored("EMA weights", "200 validation images", "200 test images")
    committed = read_table(FULL_TABLE)
    what = plots.scored(committed)
    assert what.weights == "raw weights, no EMA" and what.val_images == "200 validation images"
    full = [dict(r, **{"val/images": 5000, "test/images": 10000}) for r in rows]
    assert plots.scored(full) == plots.Scored(
        "EMA weights", "5,000 validation images", "the official 10,000 test images"
    )
    mixed = [dict(r, has_ema=i % 2 == 0) for i, r in enumerate(rows)]
    assert plots.scored(mixed).weights == "EMA weights where kept, else raw"


def test_read_table_types(tmp_path: Path) -> None:
    """pandas reads the table; cells come back as Python int, float, bool and '' (what report.py expects)."""
    path = tmp_path / "t.csv"
    path.write_text("model,params,width,has_ema,target\nb0,4135648,1.0,False,\nd2,8482132,1.1,True,2.0\n")
    rows = read_table(path)
    assert rows[0] == {"model": "b0", "params": 4135648, "width": 1.0, "has_ema": False, "target": ""}
    assert type(rows[0]["params"]) is int and type(rows[1]["target"]) is float and rows[1]["has_ema"] is True
    assert read_table(tmp_path / "missing.csv") == []


def test_summary_metrics_is_small_and_flat(tmp_path: Path) -> None:
    write_results(tmp_path)
    summary = plots.summary_metrics(read_table(tmp_path / "metrics" / "models.csv"))
    assert list(summary) == [f"B{i}" for i in range(8)] + ["ResNet-50", "ResNet-152", "DenseNet-201", "phi"]  # by size
    assert summary["B0"] == pytest.approx(50.0) and summary["B7"] == pytest.approx(64.0) and summary["phi"] == 52.0
    committed = plots.summary_metrics(read_table(FULL_TABLE))
    assert committed["DenseNet-201"] == 6.0 and len(committed) == 12  # the committed run: B0-B7, 3 baselines, phi


def test_summary_fits_160_columns_in_dvc(tmp_path: Path) -> None:
    """`dvc metrics show metrics/summary.json` of the committed run, rendered by dvc itself, is under 160 columns."""
    dvc = Path(sys.executable).parent / "dvc"

    def run(*cmd: str) -> subprocess.CompletedProcess:
        env = {"COLUMNS": "400", "PATH": f"{dvc.parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=True, env=env)

    run("git", "init", "-q")
    run(str(dvc), "init", "-q")
    make_plots(
        models_table=FULL_TABLE,
        search_table=tmp_path / "none.csv",
        cam_table=tmp_path / "none.csv",
        dvclive_dir=tmp_path / "none",
        out_dir=tmp_path / "plots",
        log=lambda *_: None,
        summary=tmp_path / "metrics" / "summary.json",
    )
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - metrics/summary.json\n")
    shown = run(str(dvc), "metrics", "show", "metrics/summary.json").stdout
    assert "B7" in shown and "ResNet-152" in shown
    assert max(len(line) for line in shown.splitlines()) < 160


def test_the_search_figure_says_each_candidate_is_at_its_own_phi(tmp_path: Path, drawn: dict) -> None:
    _committed_run(tmp_path)
    make_plots(
        models_table=tmp_path / "metrics" / "models.csv",
        search_table=tmp_path / "plots" / "search.csv",
        cam_table=tmp_path / "plots" / "cam_faithfulness.csv",
        dvclive_dir=tmp_path / "dvclive",
        out_dir=tmp_path / "plots",
        log=pytest.fail,
    )
    labels = [ax.get_xlabel() for ax in drawn["search"].axes]
    assert "FLOPs of each candidate as trained (at its own phi), relative to B0" in labels
    assert not any("phi = 1" in label for label in labels)  # the candidates are not at phi = 1
