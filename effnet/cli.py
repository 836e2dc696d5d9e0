"""The command line of every stage script: parse, load params, run, and turn known errors into one line.

    def main(argv=None):
        parser = cli.parser(__doc__)                  # --params is always there
        parser.add_argument("--data", ...)
        return cli.main(parser, run, argv)            # run(args, params) -> 0

A known error (a bad key in params.yaml, a missing file, a failed download, a training
error) becomes `error: <message>` on stderr and exit status 1; Ctrl-C becomes one
`interrupted` line and exit status 1. A training stage passes `lock=` (its checkpoint
directory): the stage then holds that directory's lock while it runs, so a second trainer
refuses at once, and when started by `effnet.supervise` or torchrun it dies with its parent.

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

from effnet.config import load_params
from effnet.io import LockedError, lock_dir

# Errors whose message already says what went wrong and what to do. Named by module, not
# imported, so that this module stays free of torch: an error of a module that was never
# imported cannot have been raised.
EXPECTED_ERRORS = ("effnet.config.ConfigError", "effnet.download.DataError", "effnet.search.SearchError",
                   "effnet.train.TrainingError", "effnet.evaluate.EvaluationError")
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
    known = isinstance(error, (ValueError, FileNotFoundError, LockedError))
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


def main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace, Any], int | None],
         argv: list[str] | None = None, *, lock: Callable[[argparse.Namespace], Path] | None = None) -> int:
    """Parse `argv`, load `--params`, call `run(args, params)`; return the exit status.

    `lock(args)` names a training stage's checkpoint directory: rank 0 holds its lock while
    `run` runs (the other ranks of a torchrun group share rank 0's directory).
    """
    args = parser.parse_args(argv)  # argparse's own errors: usage and exit status 2
    directory = lock(args) if lock is not None else None
    if directory is not None:
        die_with_parent()
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        params = load_params(args.params)  # a bad key stops here, before anything starts
        locks = directory is not None and os.environ.get("RANK", "0") == "0"
        with lock_dir(directory) if locks else contextlib.nullcontext():
            _running[0] = True
            return run(args, params) or 0
    except KeyboardInterrupt:
        _running[0] = False
        where = f"; rerun to resume from {directory}" if directory is not None else ""
        _say(f"interrupted{where}")
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
