"""The command line of every stage script: parse, load params, run, and turn known errors into one line.

    def main(argv=None):
        parser = cli.parser(__doc__)                  # --params is always there
        parser.add_argument("--data", ...)
        return cli.main(parser, run, argv)            # run(args, params) -> 0

A known error (a bad key in params.yaml, a missing file, a failed download, a training
error) becomes `error: <message>` on stderr and exit status 1; Ctrl-C becomes one
`interrupted` line (saying where to resume, or that nothing was saved yet) and exit status 1.
A training stage passes `lock=` (its checkpoint directory): the stage then holds that
directory's lock while it runs, so a second trainer refuses at once, and when started by
`effnet.supervise` or torchrun it dies with its parent.

Imports no torch (nor anything that does), so the stages that only read tables and draw
figures start in a fraction of a second; the library is imported by the stage scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from effnet.config import load_params
from effnet.io import LOCK_NAME, LockedError, WriteError, lock_dir

# Errors whose message already says what went wrong and what to do. Named by module, not
# imported, so that this module stays free of torch: an error of a module that was never
# imported cannot have been raised.
EXPECTED_ERRORS = (
    "effnet.config.ConfigError",
    "effnet.download.DataError",
    "effnet.search.SearchError",
    "effnet.train.TrainingError",
    "effnet.evaluate.EvaluationError",
)
PARENT_ENV = "EFFNET_LAUNCHER_PID"  # set by effnet.supervise: the process this stage must not outlive
# Set by effnet.supervise over several processes: each rank leaves its one line (or, for a bug,
# its traceback) there and the supervisor prints the distinct ones, so N ranks failing alike show
# one line, not N, and the ranks that fail only because another died (a broken collective) say
# nothing over the supervisor's report of that death.
ERRORS_ENV = "EFFNET_ERRORS_DIR"
# Set by effnet.supervise: a file where the stage says what it runs, for the supervisor's line
# if the stage is SIGKILLed (it cannot say anything then).
KILLED_ENV = "EFFNET_KILLED_NOTE"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _is(error: BaseException, qualified: str) -> bool:
    """isinstance(error, <module.Class>), False where that module was never imported (so cannot have raised it)."""
    module, name = qualified.rsplit(".", 1)
    cls = getattr(sys.modules.get(module), name, None)
    return cls is not None and isinstance(error, cls)


def expected(error: BaseException) -> bool:
    """Whether `error` is a known failure with a one-line message (else a bug: show the traceback)."""
    known = isinstance(error, (ValueError, FileNotFoundError, LockedError, WriteError))
    return known or any(_is(error, q) for q in EXPECTED_ERRORS)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser described by the first line of the script's docstring, with `--params`."""
    result = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    result.add_argument("--params", default="params.yaml", type=Path)
    return result


def die_with_parent() -> None:
    """End this process (SIGKILL) as soon as the process that launched it is gone.

    Only for processes started by `effnet.supervise` (which names itself in
    EFFNET_LAUNCHER_PID) or by torchrun (which starts each worker in a session of its own,
    so killing the supervisor's process group does not reach the workers). On Linux the
    kernel sends the signal (prctl PR_SET_PDEATHSIG); elsewhere, and against a parent that
    died before this ran, a thread checks the parent's pid every second.
    """
    parent = os.environ.get(PARENT_ENV)
    if parent is None and "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    expected_parent = int(parent) if parent else os.getppid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != expected_parent:  # the parent died before the kernel knew to tell us
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != expected_parent:
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def if_killed_say(what: str, hint: str = "") -> None:
    """Leave `what` (e.g. 'efficientnet_b0 at train.batch_size 128') and `hint` for the supervisor's SIGKILL line."""
    note = os.environ.get(KILLED_ENV)
    if note and os.environ.get("RANK", "0") == "0":
        with contextlib.suppress(OSError):
            Path(note).write_text(json.dumps({"what": what, "hint": hint}))


def side_line(module: str, *args: str) -> None:
    """Show what `python -m module args` prints, from a short process of its own; rank 0 only, best effort.

    For lines from code that must not be a dependency of the stage (named here, not imported):
    an edit to it must not re-run the stage. A failure only loses the line.
    """
    if os.environ.get("RANK", "0") != "0":
        return
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-m", module, *args], check=False, timeout=120, stderr=subprocess.DEVNULL)


_running = [False]  # whether run() is under way: a SIGTERM then stops it as Ctrl-C would


def _on_sigterm(signum: int, frame: Any) -> None:
    """torchrun and the supervisor stop a group's workers with SIGTERM: inside run() as Ctrl-C; after it, quietly."""
    if _running[0]:
        _running[0] = False
        raise KeyboardInterrupt
    os._exit(1)  # already leaving (its error said): no traceback from wherever the signal lands


def _say(text: str, kind: str = "error") -> None:
    """The failure's line (kind 'error') or traceback: to stderr, or to the supervisor's errors directory."""
    errors_dir = os.environ.get(ERRORS_ENV)
    if errors_dir:
        (Path(errors_dir) / f"rank{int(os.environ.get('RANK', '0')):05d}.{kind}").write_text(text.rstrip() + "\n")
    else:
        print(text.rstrip(), file=sys.stderr)


def interrupted_line(directory: Path | None) -> str:
    """What Ctrl-C says: where to resume from when `directory` holds saved work, else that nothing was saved."""
    if directory is None:
        return "interrupted"
    saved = Path(directory).is_dir() and any(p.is_file() and p.name != LOCK_NAME for p in Path(directory).rglob("*"))
    if saved:
        return f"interrupted; rerun to resume from {directory}"
    return f"interrupted before anything was saved in {directory} (no epoch had finished); a rerun starts afresh"


def main(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace, Any], int | None],
    argv: list[str] | None = None,
    *,
    lock: Callable[[argparse.Namespace], Path] | None = None,
) -> int:
    """Parse `argv`, load `--params`, call `run(args, params)`; return the exit status.

    `lock(args)` names a training stage's checkpoint directory: rank 0 holds its lock while
    `run` runs (the other ranks of a torchrun group share rank 0's directory). Before `run`,
    the params must agree with the `-S` values of the `dvc exp run` the stage runs under, and
    after it they must be as they were loaded (see `check_experiment_params`,
    `check_params_unchanged`): otherwise one line and exit status 1.
    """
    args = parser.parse_args(argv)  # argparse's own errors: usage and exit status 2
    directory = lock(args) if lock is not None else None
    if directory is not None:
        die_with_parent()
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        params = load_params(args.params)  # a bad key stops here, before anything starts
        check_experiment_params(args.params)
        _started[:] = [Path(args.params), params]
        locks = directory is not None and os.environ.get("RANK", "0") == "0"
        with lock_dir(directory) if locks else contextlib.nullcontext():
            _running[0] = True
            status = run(args, params) or 0
        check_params_unchanged()  # the stage's outputs are written, but DVC records no lock entry for a failure
        return status
    except KeyboardInterrupt:
        _running[0] = False
        _say(interrupted_line(directory))
        return 1
    except Exception as error:
        _running[0] = False
        if expected(error):
            _say(f"error: {error}")
        elif os.environ.get(ERRORS_ENV):
            _say(traceback.format_exc(), "traceback")  # shown by the supervisor unless another rank's death explains it
        else:
            raise
        return 1
    finally:
        _running[0] = False
        _started.clear()


# --------------------------------------------------------------------------------------
# the params a stage runs with: two `dvc exp run` in one workspace
# --------------------------------------------------------------------------------------
# A second `dvc exp run -S ...` in a workspace where one is running writes its -S values into
# params.yaml before DVC's own lock refuses it, and leaves them there: the stages of the first
# experiment that start afterwards would train the second one's values. Two checks, neither
# of which needs a wrapper (users call `dvc exp run` directly):
# - at start, every `-S key=value` of the `dvc exp run` this stage runs under must still be
#   what params.yaml says (`check_experiment_params`);
# - while training, params.yaml must stay as it was when the stage started
#   (`check_params_unchanged`, called at every checkpoint and before the weights are written).

_started: list[Any] = []  # [params path, Params] as loaded by main()


class ParamsChangedError(ValueError):
    """params.yaml no longer holds the values this stage or its experiment started with. The message names them."""


_ADVICE = (
    "another `dvc exp run` in this workspace has probably rewritten params.yaml. Let the other run finish "
    "(one experiment at a time per workspace; queue others with `dvc exp run --queue` or run them with "
    "`--temp`), restore params.yaml (`git checkout params.yaml`) and run again"
)


def flatten_params(raw: Any, prefix: str = "") -> dict[str, Any]:
    """{'train.lr': 0.2, ...} from a nested mapping (lists are values)."""
    if not isinstance(raw, dict):
        return {prefix: raw}
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        flat.update(flatten_params(value, f"{prefix}{key}."))
    return {k.rstrip("."): v for k, v in flat.items()}


def ancestors(pid: int) -> list[int]:
    """The parent chain of `pid` (nearest first), from /proc; [] where there is no /proc."""
    chain = []
    while pid > 1 and len(chain) < 64:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the command name in parentheses
        chain.append(pid)
    return chain


def experiment_overrides(pid: int | None = None) -> tuple[Path, list[str]] | None:
    """(the working directory, the `-S` values) of the `dvc exp run` that `pid` (default: this process) runs under.

    None when no ancestor is a `dvc exp run` (a `dvc repro`, a direct call, a queued
    experiment's worker). Values are as typed, `key=value`, with `+`/`++` prefixes removed;
    deletions (`~key`) are left out.
    """
    for ancestor in ancestors(os.getpid() if pid is None else pid):
        try:
            argv = Path(f"/proc/{ancestor}/cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = Path(os.readlink(f"/proc/{ancestor}/cwd"))
        except OSError:
            continue
        names = [Path(a).name for a in argv]
        starts = [i for i in range(len(argv) - 1) if argv[i] == "exp" and argv[i + 1] == "run" and "dvc" in names[:i]]
        if not starts:
            continue
        values, rest = [], argv[starts[0] + 2 :]
        for i, arg in enumerate(rest):
            if arg in ("-S", "--set-param") and i + 1 < len(rest):
                values.append(rest[i + 1])
            elif arg.startswith("--set-param="):
                values.append(arg.split("=", 1)[1])
            elif arg.startswith("-S") and len(arg) > 2:
                values.append(arg[2:])
        return cwd, [v.lstrip("+") for v in values if "=" in v and not v.startswith("~")]
    return None


def _same(text: str, value: Any) -> bool:
    """Whether an override's text `text` sets `value` (YAML's reading, or the number it spells)."""
    try:
        if yaml.safe_load(text) == value:
            return True
    except yaml.YAMLError:
        pass
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return text.strip().strip("'\"") == str(value)


def check_experiment_params(params_path: Path, pid: int | None = None) -> None:
    """Raise ParamsChangedError if params.yaml disagrees with a `-S` of the `dvc exp run` this stage runs under.

    Only for the params.yaml of that experiment's working directory (`--temp` and queued
    experiments run in a copy of their own, which nothing else writes).
    """
    found = experiment_overrides(pid)
    if found is None:
        return
    cwd, overrides = found
    with contextlib.suppress(OSError):
        if Path(params_path).resolve() != (cwd / "params.yaml").resolve():
            return
    flat = flatten_params(yaml.safe_load(Path(params_path).read_text()) or {})
    for override in overrides:
        key, text = override.split("=", 1)
        key = key.split(":", 1)[1] if ":" in key else key  # params.yaml:model.phi
        if key in flat and not _same(text, flat[key]):
            raise ParamsChangedError(
                f"{params_path} has {key} = {flat[key]!r}, but this experiment was started with "
                f"-S {key}={text}: {_ADVICE}"
            )


def check_params_unchanged() -> None:
    """Raise ParamsChangedError if the params file that `main` loaded now holds other values (naming them).

    Called by the training stages at every checkpoint and before the weights are written, and
    by `main` after every stage: results of one set of params must not be recorded under another.
    """
    if not _started:
        return
    path, params = _started
    try:
        now = load_params(path)
    except Exception as error:  # noqa: BLE001 -- a broken params file is a change too
        raise ParamsChangedError(
            f"{path} changed while this stage ran and no longer loads ({error}): {_ADVICE}"
        ) from None
    if now == params:
        return
    import dataclasses

    old, new = flatten_params(dataclasses.asdict(params)), flatten_params(dataclasses.asdict(now))
    changes = [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
    ]
    raise ParamsChangedError(
        f"{path} changed while this stage ran ({'; '.join(changes[:5])}); nothing more is written for it: {_ADVICE}"
    )
