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


class WriteError(RuntimeError):
    """A file could not be written (a full disk, a directory without write permission). Names the file and the fix."""


def _torch_write_failed(error: BaseException) -> bool:
    """torch.save's zip writer reports a short write (a full disk) as a RuntimeError, not an OSError."""
    text = str(error)
    return isinstance(error, RuntimeError) and ("unexpected pos" in text or "file write failed" in text)


def write_failure(path: Path, error: BaseException) -> WriteError:
    """The one-line error for `path` not written because of `error` (OSError, or torch's short write)."""
    path, code = Path(path), getattr(error, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or _torch_write_failed(error):
        why, fix = f"no space left on the disk (df -h {path.parent})", "free some space and rerun"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        why, fix = f"{path.parent} is not writable", f"make it writable (chmod u+w {path.parent}) and rerun"
    else:
        why, fix = str(error), "rerun once that is fixed"
    return WriteError(f"{path}: could not be written: {why}; {fix} (a previous {path.name} is left as it was)")


def ensure_writable(paths: Iterable[Path]) -> None:
    """Raise WriteError unless a file can be created beside each of `paths` (before any output is rewritten).

    Creates each missing parent directory and a probe file in it: a real check, right under
    ACLs, read-only mounts and root alike.
    """
    for path in paths:
        directory = Path(path).parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise write_failure(Path(path), error) from None


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


def _reported(path: Path, action: Callable[[], Any]) -> None:
    """Run `action` (which writes `path` or a temporary of it); a failure to write becomes `write_failure(path)`."""
    try:
        action()
    except WriteError:
        raise
    except OSError as error:
        if isinstance(error, FileNotFoundError) and Path(path).parent.is_dir():
            raise  # something `write` reads is missing: its own message says what
        raise write_failure(path, error) from None
    except RuntimeError as error:
        if not _torch_write_failed(error):
            raise
        raise write_failure(path, error) from None


def _prepare(path: Path, kind: str) -> Path:
    """Create `path`'s directory, remove dead writers' temporaries of that kind, and return this process's temporary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, f".{path.stem}.{kind}-", path.suffix)
    return path.with_name(f".{path.stem}.{kind}-{os.getpid()}{path.suffix}")


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp)` on a temporary path beside `path`, then rename it over `path`.

    Temporaries of `path` left by a killed writer (`.<stem>.tmp-<pid><suffix>`) are removed
    first. A failure to write (a full disk, including torch.save's short write, or no
    permission) is a `WriteError` naming `path` and the fix; `path` is then left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")

    def write_and_rename() -> None:
        nonlocal tmp
        tmp = _prepare(path, "tmp")
        write(tmp)
        os.replace(tmp, path)

    try:
        _reported(path, write_and_rename)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_together(writes: Sequence[tuple[Path, Callable[[Path], Any]]]) -> None:
    """Write several files so that none is replaced unless all are written: every temporary first, then the renames.

    `writes` pairs each target with `write(tmp)`, as for `write_atomic`. A failure while
    writing (a full disk, no permission: a `WriteError` naming that target) leaves every
    target as it was; only the renames, which need no space, come after the first target is
    replaced.
    """
    done: list[tuple[Path, Path]] = []
    try:
        for path, write in writes:
            path = Path(path)

            def write_one(path: Path = path, write: Callable[[Path], Any] = write) -> None:
                tmp = _prepare(path, "together")
                done.append((tmp, path))
                write(tmp)

            _reported(path, write_one)
        for tmp, path in done:
            os.replace(tmp, path)
    finally:
        for tmp, _ in done:
            with contextlib.suppress(OSError):
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
            raise LockedError(
                f"{directory} is in use by another trainer (pid {holder}); wait for it to finish "
                f"or stop it (kill {holder}), then rerun"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield directory
    finally:
        os.close(fd)  # releases the lock


class DamagedFileError(ValueError):
    """A checkpoint or weights file exists but cannot be read (cut short, overwritten); the message names it and the
    fix."""


def read_torch_file(path: Path, fix: str) -> dict[str, Any]:
    """`torch.load` of `path` onto the CPU; a file that does not load is a DamagedFileError saying `fix`.

    torch is imported here, not at the top, so that this module stays torch-free for the table-only stages.
    """
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- torch reports a cut file as RuntimeError, EOFError, UnpicklingError ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DamagedFileError(
            f"{path}: damaged, cannot be read ({reason[:120]}; {path.stat().st_size:,} bytes); {fix}"
        ) from None
    if not isinstance(payload, dict):
        raise DamagedFileError(f"{path}: not a file of this project (a {type(payload).__name__}); {fix}")
    return payload
