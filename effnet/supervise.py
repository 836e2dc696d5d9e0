"""Run a stage script as a supervised process tree: one process on the CPU or one GPU, one per GPU otherwise.

    python -m effnet.supervise stages/train.py --model efficientnet_b0 [stage arguments ...]

dvc.yaml starts every training stage this way (`${launch}`). The supervisor
- counts the GPUs (`nvidia-smi -L`, within CUDA_VISIBLE_DEVICES; EFFNET_NPROC overrides)
  and runs the script directly when there is at most one, or one process per GPU through
  torch's elastic launcher (what `torchrun --standalone` runs) when there are more;
- ties the script's processes to itself: they die when it dies, however it dies, so a
  `kill -9` of `dvc repro`'s process group leaves no trainer behind (`effnet.cli.die_with_parent`),
  and ties itself to the `dvc` above it: a plain SIGTERM to `dvc` alone ends it too (`stop_with_dvc`);
- turns failures into one line: a worker's own `error:` line is all that is shown (not
  torchrun's ChildFailedError report), and a process killed by SIGKILL (on the CPU, most
  likely the out-of-memory killer) is reported with the most memory the supervisor saw the
  tree hold and with what the script said it was running (`effnet.cli.if_killed_say`).
Ctrl-C reaches the script, which says where it will resume; the supervisor then stays quiet.
Knows nothing of particular stages; imports torch only for several GPUs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from effnet.cli import ERRORS_ENV, KILLED_ENV, PARENT_ENV, ancestors
from effnet.io import pid_alive


def gpu_count() -> int:
    """GPUs this process may use: `nvidia-smi -L` lines, limited by CUDA_VISIBLE_DEVICES; 0 without a driver."""
    if os.environ.get("EFFNET_NPROC"):
        return int(os.environ["EFFNET_NPROC"])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    count = sum(line.startswith("GPU ") for line in listing.splitlines())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
    return count


def tree_rss(pid: int, include_self: bool = True) -> int:
    """Resident memory (bytes) of `pid` (unless not `include_self`) and all its descendants, from /proc."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            if include_self or current != pid:
                status = Path(f"/proc/{current}/status").read_text()
                total += next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, StopIteration, ValueError):
            continue
    return total


def killed_message(script: str, args: list[str], peak_rss: int, note: Path) -> str:
    """The one line for a stage process killed by SIGKILL: what it ran (its `note`, else its command), memory seen."""
    try:
        said = json.loads(note.read_text())
        what, hint = said["what"], f" {said['hint']}" if said.get("hint") else ""
    except (OSError, ValueError, KeyError, TypeError):
        what, hint = " ".join([script, *args]), ""
    held = f" after holding up to {peak_rss / 2**30:.2f} GiB of memory" if peak_rss else ""
    return f"error: {what} was killed by SIGKILL{held}; most likely the out-of-memory killer.{hint}"


def watch_memory(pid: int, include_self: bool, done: Callable[[], bool]) -> list[int]:
    """Sample the resident memory of `pid`'s tree every 0.2 s in a thread until `done()`; [peak bytes]."""
    peak = [0]

    def sample() -> None:
        while not done():
            peak[0] = max(peak[0], tree_rss(pid, include_self))
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    return peak


def _set_pdeathsig() -> None:  # in the child, between fork and exec: die with the supervisor
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def tree_first() -> dict[str, str]:
    """PYTHONPATH with the working directory first: a stage script run from a copy of the tree (a `dvc exp run
    --temp` workspace, a test's copy) imports that copy's `effnet`, not the installed (editable) one."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}


def run_one(script: str, args: list[str]) -> int:
    """The stage script as one child process; returns its exit status, reporting a SIGKILL."""
    linux = sys.platform.startswith("linux")
    with tempfile.TemporaryDirectory(prefix="effnet-supervise-") as scratch:
        note = Path(scratch) / "killed.json"
        env = {**os.environ, **tree_first(), PARENT_ENV: str(os.getpid()), KILLED_ENV: str(note)}
        child = subprocess.Popen(
            [sys.executable, "-u", script, *args], env=env, preexec_fn=_set_pdeathsig if linux else None
        )
        peak = watch_memory(child.pid, True, lambda: child.poll() is not None)
        while True:
            try:
                code = child.wait()
                break
            except KeyboardInterrupt:  # Ctrl-C reached the child too; it says where to resume
                continue
        if code == -signal.SIGKILL:
            print(killed_message(script, args, peak[0], note), file=sys.stderr)
        elif code < 0 and code != -signal.SIGINT:  # SIGINT and SIGTERM: the stage has said where it will resume
            print(f"error: {script} died of {signal.Signals(-code).name}", file=sys.stderr)
    return 1 if code < 0 else code


def run_many(script: str, args: list[str], nproc: int) -> int:
    """One process per GPU, as `torchrun --standalone --nproc-per-node=nproc` starts them."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in list(logging.Logger.manager.loggerDict):  # the workers say what failed; the agent's reports are noise
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ.update(tree_first())
    os.environ[PARENT_ENV] = str(os.getpid())  # the workers inherit it: the agent runs in this process
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.1,
    )
    finished = threading.Event()
    peak = watch_memory(os.getpid(), False, finished.is_set)  # the workers, not the supervisor
    with tempfile.TemporaryDirectory(prefix="effnet-errors-") as errors_dir:
        os.environ[ERRORS_ENV] = errors_dir
        os.environ[KILLED_ENV] = str(Path(errors_dir) / "killed.json")  # not a rank's report: no .error suffix
        try:
            elastic_launch(config, sys.executable)("-u", script, *args)
            return 0
        except ChildFailedError as error:
            killed = -signal.SIGKILL in [failure.exitcode for failure in error.failures.values()]
        except (KeyboardInterrupt, SignalException):  # Ctrl-C: the agent stopped the workers, which say so
            killed = False
        finally:
            finished.set()
        reports = sorted(Path(errors_dir).iterdir())
        if killed:  # the root cause: what the other ranks said (a broken collective, interrupted) follows from it
            texts = [killed_message(script, args, peak[0], Path(os.environ[KILLED_ENV]))]
        else:  # the known errors; tracebacks (bugs) only when no rank had a known error that explains them
            texts = [p.read_text().strip() for p in reports if p.suffix == ".error"] or [
                p.read_text().strip() for p in reports if p.suffix == ".traceback"
            ]
        for text in dict.fromkeys(texts):  # distinct, in rank order
            print(text, file=sys.stderr)
        return 1


def dvc_ancestor(pid: int | None = None) -> int | None:
    """The nearest ancestor of `pid` (default: this process) whose command line is a `dvc` one, or None."""
    for ancestor in ancestors(os.getpid() if pid is None else pid):
        try:
            argv = Path(f"/proc/{ancestor}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "dvc" in [Path(arg).name for arg in argv[:3]]:  # `dvc ...`, `python .../dvc ...`, `python -m dvc ...`
            return ancestor
    return None


def stop_with_dvc(interval: float = 0.5) -> int | None:
    """When started under `dvc` (repro, exp run), end this supervisor, and so its trainers, soon after `dvc` dies.

    A plain SIGTERM to `dvc` ends `dvc` but not the shell and launcher it started, which would
    train on as orphans. A thread checks dvc's pid every `interval` seconds and, once it is
    gone, sends this process SIGTERM: on one process the supervisor then dies (its trainer
    gets SIGKILL from the kernel, `_set_pdeathsig`), on several the elastic agent stops its
    workers. Returns the pid watched, or None when there is no `dvc` above this process.
    """
    watched = dvc_ancestor()
    if watched is None:
        return None

    def watch() -> None:
        while pid_alive(watched):
            time.sleep(interval)
        print(f"stopping: `dvc` (pid {watched}) is gone", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-dvc", daemon=True).start()
    return watched


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or not argv[0].endswith(".py"):
        print("usage: python -m effnet.supervise stages/<stage>.py [arguments ...]", file=sys.stderr)
        return 2
    stop_with_dvc()
    nproc = gpu_count()
    return run_many(argv[0], argv[1:], nproc) if nproc > 1 else run_one(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
