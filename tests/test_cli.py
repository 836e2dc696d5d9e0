"""effnet/cli.py: every stage's command line; known failures are one line and exit 1, and it needs no torch."""

from __future__ import annotations

import os
import signal
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
        (tmp_path / "ck/last.pt").write_bytes(b"an epoch")
        raise KeyboardInterrupt

    assert stage(run, tmp_path, lock=lambda args: tmp_path / "ck")() == 1
    assert capsys.readouterr().err == f"interrupted; rerun to resume from {tmp_path / 'ck'}\n"


def test_ctrl_c_before_the_first_checkpoint_does_not_promise_a_resume(tmp_path, capsys):
    def run(args, params):
        raise KeyboardInterrupt

    assert stage(run, tmp_path, lock=lambda args: tmp_path / "ck")() == 1
    assert capsys.readouterr().err == (
        f"interrupted before anything was saved in {tmp_path / 'ck'} (no epoch had finished); a rerun starts afresh\n"
    )


def test_library_errors_are_known_by_name_without_importing_torch_here():
    from effnet.train import TrainingError  # a RuntimeError: known only through cli.EXPECTED_ERRORS

    assert cli.expected(TrainingError("x")) and cli.expected(ValueError("x"))
    assert not cli.expected(RuntimeError("x")) and not cli.expected(KeyError("x"))


@pytest.mark.parametrize(
    "module", ["effnet.cli", "effnet.supervise", "stages.plots", "stages.report", "stages.collect", "effnet.study"]
)
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


def test_params_rewritten_while_a_stage_runs_stop_it_with_the_changed_key(tmp_path, capsys):
    params_file = tmp_path / "params.yaml"

    def run(args, params):  # another experiment rewrites params.yaml, then the stage reaches a checkpoint
        params_file.write_text(params_file.read_text().replace("phi: 1.5", "phi: 0.7"))
        cli.check_params_unchanged()
        raise AssertionError("not reached")

    assert stage(run, tmp_path, lock=lambda args: tmp_path / "ck")() == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {params_file} changed while this stage ran (model.phi: 1.5 -> 0.7)")
    assert "another `dvc exp run`" in err and err.count("\n") == 1


def test_params_rewritten_after_the_stage_wrote_its_outputs_fail_it(tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    main = stage(
        lambda args, params: params_file.write_text(params_file.read_text().replace("lr: 0.2", "lr: 0.1")), tmp_path
    )
    assert main() == 1
    assert "(train.lr: 0.2 -> 0.1)" in capsys.readouterr().err


def test_unchanged_params_pass_and_nothing_is_checked_outside_a_stage(tmp_path):
    assert stage(lambda args, params: cli.check_params_unchanged(), tmp_path)() == 0
    cli.check_params_unchanged()  # no stage running: nothing to compare with


def _fake_dvc_exp_run(tmp_path, *overrides):
    """A process whose command line is `.../dvc exp run -S ...` in `tmp_path`, and its child's pid (a stage's place)."""
    dvc = tmp_path / "bin" / "dvc"
    dvc.parent.mkdir()
    dvc.write_text("#!/bin/bash\nsleep 30 &\necho $!\nwait\n")
    dvc.chmod(0o755)
    args = [str(dvc), "exp", "run"] + [a for o in overrides for a in ("-S", o)]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_a_stage_refuses_params_that_another_experiment_wrote(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text().replace("phi: 1.5", "phi: 0.7"))
    proc, child = _fake_dvc_exp_run(tmp_path, "model.phi=0.5", "train.lr=0.2", "params.yaml:train.seed=0")
    try:
        cwd, overrides = cli.experiment_overrides(child)
        assert cwd == tmp_path and overrides == ["model.phi=0.5", "train.lr=0.2", "params.yaml:train.seed=0"]
        with pytest.raises(
            cli.ParamsChangedError,
            match=r"has model.phi = 0.7, but this experiment was started "
            r"with -S model.phi=0.5: another `dvc exp run`",
        ):
            cli.check_experiment_params(tmp_path / "params.yaml", child)
        (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text().replace("phi: 1.5", "phi: 0.5"))
        cli.check_experiment_params(tmp_path / "params.yaml", child)  # its own values: no error
        other = tmp_path / "copy" / "params.yaml"  # a --temp experiment's copy: not that workspace's file
        other.parent.mkdir()
        other.write_text((ROOT / "params.yaml").read_text())
        cli.check_experiment_params(other, child)
    finally:
        os.kill(child, signal.SIGKILL)
        proc.wait()
    assert cli.experiment_overrides() is None  # pytest runs under no `dvc exp run`
