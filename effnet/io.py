"""Atomic writers: a file or a directory appears complete or not at all (temporary, then rename).

A writer killed half-way (SIGKILL, the out-of-memory killer) cannot clean up after itself,
so each writer first removes the temporaries of its own pattern that a dead process left
beside its target (`.<name>.tmp-<pid>`): no debris outlives the next run. Also the lock that
keeps two trainers off one checkpoint directory (`lock_dir`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

LOCK_NAME = ".lock"


class LockedError(RuntimeError):
    """Another live process holds the lock of a directory. The message names the directory and the pid."""


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine and is not a zombie waiting to be reaped."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        # field 3 of /proc/<pid>/stat is the state; 'Z' is a dead process not yet reaped
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale(directory: Path, prefix: str, suffix: str = "") -> list[Path]:
    """Remove `<prefix><pid><suffix>` entries of `directory` whose process is gone; returns them.

    Temporaries of live processes (a concurrent writer) are left alone.
    """
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + r"$")
    removed = []
    if not Path(directory).is_dir():
        return removed
    for entry in Path(directory).iterdir():
        match = pattern.match(entry.name)
        if match is None or int(match.group(1)) == os.getpid() or pid_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp)` on a temporary path beside `path`, then rename it over `path`.

    Temporaries of `path` left by a killed writer (`.<stem>.tmp-<pid><suffix>`) are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, f".{path.stem}.tmp-", path.suffix)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2) + "\n")


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rows as CSV with a header of `columns` (written even when there are no rows)."""
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    write_atomic(path, write)


def replace_dir(out_dir: Path, fill: Callable[[Path], Any]) -> None:
    """Call `fill(tmp)` on a fresh temporary directory, then swap it in for `out_dir`.

    On any failure the temporary directory is removed and a previous `out_dir` is left as
    it was; the previous one is removed only once the new one is in place. Temporaries of
    `out_dir` left by a killed run (`.<name>.tmp-<pid>`, `.<name>.old-<pid>`) are removed first.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("tmp", "old"):
        remove_stale(out_dir.parent, f".{out_dir.name}.{kind}-")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        fill(tmp)
        if out_dir.exists():
            os.replace(out_dir, old)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            if old.exists():
                os.replace(old, out_dir)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def lock_dir(directory: Path) -> Iterator[Path]:
    """Hold an exclusive lock on `directory` (created if missing) for the `with` block.

    The lock is `fcntl.flock` on `directory/.lock`, taken without waiting: if another
    process holds it, `LockedError` names the directory and that process's pid at once.
    The kernel drops the lock when its holder dies, however it dies, so a killed trainer
    never leaves a stale lock behind. Local file systems only (flock is not shared over NFS).
    """
    import fcntl  # POSIX only; imported here so that the writers above work anywhere

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LockedError(f"{directory} is in use by another trainer (pid {holder}); wait for it to finish "
                              f"or stop it (kill {holder}), then rerun") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield directory
    finally:
        os.close(fd)  # releases the lock
