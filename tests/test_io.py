"""Atomic writers leave no debris of killed runs; the checkpoint-directory lock refuses a second holder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from effnet.io import LockedError, lock_dir, pid_alive, replace_dir, write_text

ROOT = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_replace_dir_removes_what_a_killed_run_left(tmp_path):
    # as `kill -9` during the download stage's preparation leaves it: data/.cifar100.tmp-<pid> (33 MB on real data)
    dead, live = dead_pid(), os.getppid()
    assert not pid_alive(dead) and pid_alive(live)
    for name in (f".cifar100.tmp-{dead}", f".cifar100.old-{dead}", f".cifar100.tmp-{live}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.npz").write_bytes(b"x" * 100)
    (tmp_path / f".other.tmp-{dead}").mkdir()  # another output's temporary: not this writer's to judge
    replace_dir(tmp_path / "cifar100", lambda tmp: (tmp / "meta.json").write_text("{}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["cifar100", f".cifar100.tmp-{live}", f".other.tmp-{dead}"])  # a live writer's temporary is left alone
    assert (tmp_path / "cifar100/meta.json").read_text() == "{}"


def test_write_atomic_removes_stale_temporaries_of_its_file(tmp_path):
    dead = dead_pid()
    (tmp_path / f".search.tmp-{dead}.json").write_text("half")
    (tmp_path / f".models.tmp-{dead}.csv").write_text("half")
    write_text(tmp_path / "search.json", "{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".models.tmp-{dead}.csv", "search.json"]


def test_lock_dir_refuses_a_second_holder_naming_the_directory_and_pid(tmp_path):
    directory = tmp_path / "checkpoints" / "efficientnet_b0"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from effnet.io import lock_dir\n"
         f"with lock_dir({str(directory)!r}):\n    print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=rf"{directory} is in use by another trainer \(pid {holder.pid}\)"):
            with lock_dir(directory):
                pass
    finally:
        holder.kill()
        holder.wait()
    with lock_dir(directory):  # the kernel dropped the killed holder's lock: no stale lock file blocks a rerun
        assert (directory / ".lock").read_text().strip() == str(os.getpid())
