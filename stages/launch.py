"""Start a training stage: one process on the CPU or one GPU, one per GPU under torch's elastic launcher.

    python stages/launch.py stages/train.py --model efficientnet_b0 [stage arguments ...]

dvc.yaml starts every training stage this way (`${launch}`). The launcher
- counts the GPUs (`nvidia-smi -L`, within CUDA_VISIBLE_DEVICES; EFFNET_NPROC overrides)
  and runs the stage script directly when there is at most one, or one process per GPU
  through torch's elastic launcher (what `torchrun --standalone` runs) when there are more;
- ties the stage's processes to itself: they die when it dies, however it dies, so a
  `kill -9` of `dvc repro`'s process group leaves no trainer behind (see stages/cli.py);
  and ties itself to the `dvc` above it: a plain SIGTERM to `dvc` alone ends it too (`stop_with_dvc`);
- turns failures into one line: a worker's own `error:` line is all that is shown (not
  torchrun's ChildFailedError report), and a process killed by SIGKILL (on the CPU, most
  likely the out-of-memory killer) is reported with the model, the batch size and the
  most memory the launcher saw the stage hold, with a smaller batch to try.
Ctrl-C reaches the stage, which says where it will resume; the launcher then stays quiet.
Imports torch only for several GPUs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, for `stages`

from effnet.io import pid_alive  # noqa: E402
from stages.cli import ERRORS_ENV, PARENT_ENV, ancestors  # noqa: E402


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


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def what(script: str, args: list[str]) -> tuple[str, int | None]:
    """(the model the stage trains, train.batch_size) from its arguments and params file, for messages."""
    try:
        params = yaml.safe_load(Path(_option(args, "--params") or "params.yaml").read_text())
        batch, phi = params["train"]["batch_size"], params["model"]["phi"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        batch, phi = None, "?"
    name = Path(script).stem
    if _option(args, "--model"):
        return _option(args, "--model"), batch
    if name == "train_phi":
        return f"efficientnet_phi (model.phi {phi})", batch
    if name == "train_scaling":
        target = _option(args, "--target")
        return f"the scaling study's {_option(args, '--strategy')}{f' at {target}x B0' if target else ''}", batch
    return f"a {name} candidate" if name == "search" else name, batch


def killed_message(script: str, args: list[str], peak_rss: int) -> str:
    """The one line for a stage process killed by SIGKILL: model, batch size, memory seen, a smaller batch."""
    model, batch = what(script, args)
    smaller = f"{max(1, batch // 2)}" if batch else "<smaller>"
    held = f" after holding up to {peak_rss / 2**30:.2f} GiB of memory" if peak_rss else ""
    return (f"error: {model} was killed by SIGKILL at train.batch_size {batch}{held}; most likely the out-of-memory "
            f"killer. Try a smaller batch, e.g. dvc exp run -S train.batch_size={smaller} "
            "(the learning rate scales with it)")


def watch_memory(pid: int, include_self: bool, done) -> list[int]:
    """Sample the resident memory of `pid`'s tree every 0.2 s in a thread until `done()`; [peak bytes]."""
    peak = [0]

    def sample() -> None:
        while not done():
            peak[0] = max(peak[0], tree_rss(pid, include_self))
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    return peak


def _set_pdeathsig() -> None:  # in the child, between fork and exec: die with the launcher
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def run_one(script: str, args: list[str]) -> int:
    """The stage script as one child process; returns its exit status, reporting a SIGKILL."""
    linux = sys.platform.startswith("linux")
    child = subprocess.Popen([sys.executable, "-u", script, *args], env={**os.environ, PARENT_ENV: str(os.getpid())},
                             preexec_fn=_set_pdeathsig if linux else None)
    peak = watch_memory(child.pid, True, lambda: child.poll() is not None)
    while True:
        try:
            code = child.wait()
            break
        except KeyboardInterrupt:  # Ctrl-C reached the child too; it says where to resume
            continue
    if code == -signal.SIGKILL:
        print(killed_message(script, args, peak[0]), file=sys.stderr)
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
    os.environ[PARENT_ENV] = str(os.getpid())  # the workers inherit it: the agent runs in this process
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    finished = threading.Event()
    peak = watch_memory(os.getpid(), False, finished.is_set)  # the workers, not the launcher
    with tempfile.TemporaryDirectory(prefix="effnet-errors-") as errors_dir:
        os.environ[ERRORS_ENV] = errors_dir
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
            texts = [killed_message(script, args, peak[0])]
        else:  # the known errors; tracebacks (bugs) only when no rank had a known error that explains them
            texts = [p.read_text().strip() for p in reports if p.suffix == ".error"] or \
                    [p.read_text().strip() for p in reports if p.suffix == ".traceback"]
        for text in dict.fromkeys(texts):  # distinct, in rank order
            print(text, file=sys.stderr)
        return 1


def announce(script: str, args: list[str]) -> None:
    """'matrix model 5/11: ..., about 3 h here' before a matrix model trains (`python -m effnet.clock --model-line`).

    Printed here, in a short process of its own, rather than by the stage: the stage's code is
    its DVC dependency, and an edit to the clock must not retrain eleven networks. Best
    effort: a failure here only loses the line.
    """
    model = _option(args, "--model")
    if Path(script).name != "train.py" or model is None:
        return
    command = [sys.executable, "-m", "effnet.clock", "--model-line", model, "--params", _option(args, "--params") or "params.yaml"]
    root = str(Path(__file__).resolve().parents[1])  # `effnet`, wherever the launcher is started from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        subprocess.run(command, check=False, timeout=120, stderr=subprocess.DEVNULL, env=env)
    except (OSError, subprocess.TimeoutExpired):
        pass


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
    """When started under `dvc` (repro, exp run), end this launcher, and so its trainers, soon after `dvc` dies.

    A plain SIGTERM to `dvc` ends `dvc` but not the shell and launcher it started, which would
    train on as orphans. A thread checks dvc's pid every `interval` seconds and, once it is
    gone, sends this process SIGTERM: on one process the launcher then dies (its trainer
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
        print("usage: python stages/launch.py stages/<stage>.py [arguments ...]", file=sys.stderr)
        return 2
    stop_with_dvc()
    announce(argv[0], argv[1:])
    nproc = gpu_count()
    return run_many(argv[0], argv[1:], nproc) if nproc > 1 else run_one(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
