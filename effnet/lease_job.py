"""The background job of a lease's first call: a trimmed benchmark, then training under a deadline that later calls
refresh (docs/lease.md, "The plan: three calls").

The job outlives the call that starts it (`setsid`), so no call's timeout bounds it: only the
deadline file does, which holds an absolute time (seconds since the epoch, the machine's clock)
written by the calls and rewritten by the second one once the machine's true start is known. So
the job reads it again before each decision (`time_left`), never once at its start.

Everything here is policy with the measuring injected, so that it runs with a fake clock and
fake rows in the tests; `scripts/lease_job.py` wires in `benchmarks/bench_train.py`'s
measurements and `scripts/gpu.py`'s way of running dvc.yaml's stages without dvc.

- `run_rows`: the benchmark's rows in order, each written to the JSON as soon as it is measured
  (a cut leaves every finished row), and no row started when the time left is under the
  row's estimated time plus what the rest of the job must still do (`reserve_s`).
- `choose_epochs`: the epochs of the training runs, from the rates just measured, so that they
  and their evaluation end before the deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effnet.io import write_json

Clock = Callable[[], float]
MAX_GROWTH = 4.0  # a benchmark row's time against the last one's, at most (B4 -> B5 about 2x on the CPU here)


def read_deadline(path: Path) -> float:
    """The deadline (seconds since the epoch) in `path`; a missing or unreadable file is a deadline already past, so
    that a job without one starts nothing more."""
    try:
        return float(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def time_left(path: Path, clock: Clock = time.time) -> float:
    """Seconds until the deadline in `path`, read now (a later call may have moved it)."""
    return read_deadline(path) - clock()


@dataclass(frozen=True)
class Row:
    """One benchmark row to measure: a name, its estimated seconds before it is measured, and how to measure it."""

    name: str
    estimate_s: float  # its time if nothing better is known (an estimate; the runner uses measured rows' times)
    measure: Callable[[], dict[str, Any]]  # the row's figures (JSON-able)
    optional: bool = False  # a row run only while time remains and `skip_optional` says no (compile variants)


def run_rows(
    rows: Iterable[Row],
    out: Path,
    *,
    deadline_file: Path,
    reserve_s: float,
    clock: Clock = time.time,
    header: dict[str, Any] | None = None,
    skip_optional: Callable[[], bool] = lambda: False,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Measure `rows` in order, each written to `out` as soon as it is done; returns what was written.

    Before each row the deadline is read again, and the row is not started (nor any after it)
    when the time left is under `reserve_s` (the work that must still follow) plus the row's
    estimate: its own `estimate_s`, or the longest row measured so far times the growth of the
    last row over the one before (at most `MAX_GROWTH`), when that is longer: later rows are
    the larger models, each several times the last. A row that raises is recorded with its error and the
    benchmark goes on; `log` gets a line per row. `out` holds {"rows": [...], "stopped": null or why, ...header}.
    """
    record: dict[str, Any] = {**(header or {}), "rows": [], "skipped": [], "stopped": None}
    write_json(out, record)
    longest, growth, last = 0.0, 1.0, None
    for row in rows:
        if record["stopped"] is not None:
            record["skipped"].append(row.name)
            continue
        if row.optional and skip_optional():
            record["skipped"].append(row.name)
            continue
        left = time_left(deadline_file, clock)
        estimate = max(row.estimate_s, longest * growth)
        if left < reserve_s + estimate:
            record["stopped"] = (
                f"before {row.name}: {left:.0f} s left, under the {reserve_s:.0f} s reserved for "
                f"the rest of the job plus this row's estimated {estimate:.0f} s"
            )
            record["skipped"].append(row.name)
            write_json(out, record)
            log(f"stopped {record['stopped']}")
            continue
        began = clock()
        try:
            figures = {"name": row.name, **row.measure()}
        except Exception as error:  # a row that fails (out of memory at batch 1, a compile error) is a row
            figures = {
                "name": row.name,
                "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                if str(error)
                else type(error).__name__,
            }
        figures["wall_s"] = round(clock() - began, 3)
        if last and figures["wall_s"] > 0:
            growth = min(MAX_GROWTH, max(1.0, figures["wall_s"] / last))
        last = figures["wall_s"] or None
        longest = max(longest, figures["wall_s"])
        record["rows"].append(figures)
        write_json(out, record)
        log(
            f"{row.name}: {figures['wall_s']:.1f} s, {left - figures['wall_s']:.0f} s left"
            + (f" ({figures['error']})" if "error" in figures else "")
        )
    write_json(out, record)  # the rows skipped after the stop too
    return record


@dataclass(frozen=True)
class EpochPlan:
    """The epochs chosen for the lease's training runs, with the figures they come from (all seconds)."""

    epochs: int
    per_epoch_s: dict[str, float]  # each model's training epoch with its validation passes, from the measured rate
    fixed_s: float  # what does not grow with epochs: stage starts and the final evaluation
    available_s: float  # the time left less the stop and packing reserves
    fits: bool  # False when even one epoch of each does not fit: the trainer's deadline cuts it (exit 75)

    @property
    def expected_s(self) -> float:
        return self.fixed_s + self.epochs * sum(self.per_epoch_s.values())


def final_evaluation_s(
    rates: dict[str, float], models: list[str], *, final_images: int, eval_cost: float, seeds: int = 1
) -> float:
    """Seconds of the models' final evaluations: each of `seeds` runs of each model evaluates `final_images`
    forward only (`eval_cost` of a training image each) at its measured training rate."""
    return sum(seeds * eval_cost * final_images / rates[m] for m in models)


def choose_epochs(
    rates: dict[str, float],
    models: list[str],
    *,
    time_left_s: float,
    train_images: int,
    val_images: int,
    val_passes: int,
    final_images: int,
    eval_cost: float,
    stage_start_s: float,
    stages: int,
    stop_s: float,
    max_epochs: int,
    seeds: int = 1,
) -> EpochPlan:
    """The same number of epochs for every model of `models`, run one after another, the most that end in time.

    Each model's epoch costs `train_images` / its rate plus its validation passes
    (`val_images` x `val_passes` x `eval_cost`, evaluation being forward only); besides them
    come `stages` stage starts of `stage_start_s` each and every model's final evaluation of
    `final_images`. Each model trains and is evaluated `seeds` times (`train.seeds`), one seed
    after another: its epoch and final evaluation count that many times. The epochs are at most
    `max_epochs` (params.yaml's) and at least 1; when even 1 does not fit, `fits` is False and
    the trainer's deadline stops it resumably. A model without a measured rate is an error: the
    plan would be a guess.
    """
    missing = [m for m in models if not rates.get(m)]
    if missing:
        raise ValueError(f"no measured training rate for {', '.join(missing)}: the benchmark must time them first")
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, not {seeds}")
    per_epoch = {m: seeds * (train_images + eval_cost * val_images * val_passes) / rates[m] for m in models}
    fixed = stage_start_s * stages + final_evaluation_s(
        rates, models, final_images=final_images, eval_cost=eval_cost, seeds=seeds
    )
    available = time_left_s - stop_s
    epochs = math.floor((available - fixed) / sum(per_epoch.values()))
    fits = epochs >= 1
    return EpochPlan(
        epochs=min(max_epochs, max(1, epochs)), per_epoch_s=per_epoch, fixed_s=fixed, available_s=available, fits=fits
    )


def wait_for(
    path: Path,
    *,
    deadline_file: Path,
    reserve_s: float,
    clock: Clock = time.time,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = 2.0,
) -> bool:
    """Wait until `path` exists; False (give up) once the time left falls under `reserve_s`."""
    while not Path(path).exists():
        if time_left(deadline_file, clock) < reserve_s:
            return False
        sleep(poll_s)
    return True
