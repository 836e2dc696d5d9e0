"""effnet/cli.py: every stage's command line; known failures are one line and exit 1, and it needs no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from effnet import cli

ROOT = Path(__file__).resolve().parents[1]


def stage(run, tmp_path, **kwargs):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    parser = cli.parser("A stage.\n\nMore text.")
    return lambda argv=(): cli.main(parser, run, ["--params", str(tmp_path / "params.yaml"), *argv], **kwargs)


def test_a_known_error_is_one_line_and_exit_1(tmp_path, capsys):
    def run(args, params):
        raise FileNotFoundError(f"metrics/search.json: no such file (phi {params.model.phi})")

    assert stage(run, tmp_path)() == 1
    assert capsys.readouterr().err == "error: metrics/search.json: no such file (phi 1.5)\n"


def test_a_bad_params_file_stops_before_run(tmp_path, capsys):
    ran = []
    main = stage(lambda args, params: ran.append(1), tmp_path)
    (tmp_path / "params.yaml").write_text("data: {}\n")
    assert main() == 1 and not ran
    assert capsys.readouterr().err.startswith("error: params.yaml: missing key 'data.url'")


def test_a_bug_keeps_its_traceback(tmp_path):
    def run(args, params):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        stage(run, tmp_path)()


def test_ctrl_c_names_the_checkpoints_to_resume_from(tmp_path, capsys):
    def run(args, params):
        assert (tmp_path / "ck/.lock").is_file()  # held while the stage runs
        raise KeyboardInterrupt

    assert stage(run, tmp_path, lock=lambda args: tmp_path / "ck")() == 1
    assert capsys.readouterr().err == f"interrupted; rerun to resume from {tmp_path / 'ck'}\n"


def test_library_errors_are_known_by_name_without_importing_torch_here():
    from effnet.train import TrainingError  # a RuntimeError: known only through cli.EXPECTED_ERRORS

    assert cli.expected(TrainingError("x")) and cli.expected(ValueError("x"))
    assert not cli.expected(RuntimeError("x")) and not cli.expected(KeyError("x"))


@pytest.mark.parametrize("module", ["effnet.cli", "effnet.supervise", "stages.plots", "stages.report", "stages.collect",
                                    "effnet.study"])
def test_the_cli_the_launcher_and_the_figures_stage_import_no_torch(module):
    code = f"import sys; import {module}; print('torch' in sys.modules)"  # `stages` from the working directory
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout == "False\n"


def test_side_line_prints_a_module_s_output_from_rank_0_only(capfd, monkeypatch):
    import platform

    cli.side_line("platform")
    assert capfd.readouterr().out.strip() == platform.platform()
    monkeypatch.setenv("RANK", "1")
    cli.side_line("platform")
    cli.side_line("no_such_module_here")  # best effort: nothing raised
    assert capfd.readouterr().out == ""


def test_if_killed_say_leaves_the_note_the_supervisor_reads(tmp_path, monkeypatch):
    from effnet import supervise

    note = tmp_path / "killed.json"
    cli.if_killed_say("b0 at train.batch_size 8")  # not supervised: nowhere to write, nothing raised
    monkeypatch.setenv(cli.KILLED_ENV, str(note))
    cli.if_killed_say("b0 at train.batch_size 8", "Try 4.")
    assert supervise.killed_message("stages/train.py", [], 0, note).startswith("error: b0 at train.batch_size 8 was")
