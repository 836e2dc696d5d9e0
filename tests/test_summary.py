"""`python -m effnet.summary`: bounded arguments end in one argparse error, rows appear as they are counted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from effnet import summary

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--coefficients", "0.5", "1", "1"], "each coefficient must lie in [1, 2]"),
        (["--coefficients", "1.2", "1.1", "40"], "each coefficient must lie in [1, 2]"),
        (["--coefficients", "1.2", "x", "1"], "'x' is not a number"),
        (["--num-classes", "0"], "must be an integer >= 2"),
        (["--num-classes", "1"], "must be an integer >= 2"),
    ],
)
def test_out_of_range_arguments_are_one_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        summary.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert "error: argument" in err.strip().splitlines()[-1]  # argparse's one line, after the usage


def test_rows_are_printed_as_they_are_counted():
    # the header and B0's row arrive while the later (larger) models are still being counted
    process = subprocess.Popen(
        [sys.executable, "-m", "effnet.summary"], cwd=ROOT, stdout=subprocess.PIPE, text=True, stderr=subprocess.DEVNULL
    )
    try:
        header, first = process.stdout.readline(), process.stdout.readline()
        still_running = process.poll() is None
    finally:
        process.kill()
        process.wait()
    assert header.split()[0] == "model" and first.split()[0] == "efficientnet_b0"
    assert still_running
