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
        ["cifar100", f".cifar100.tmp-{live}", f".other.tmp-{dead}"]
    )  # a live writer's temporary is left alone
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
        [
            sys.executable,
            "-c",
            "import sys, time; from effnet.io import lock_dir\n"
            f"with lock_dir({str(directory)!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
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


def test_a_full_disk_is_one_line_naming_the_file_and_the_previous_file_stays(tmp_path):
    import errno

    from effnet.io import WriteError, write_atomic

    target = tmp_path / "metrics" / "search.json"
    write_text(target, "the previous result\n")

    def full(tmp):
        tmp.write_text("half of it")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(
        WriteError,
        match=rf"^{target}: could not be written: no space left on the disk "
        rf"\(df -h {target.parent}\); free some space and rerun "
        r"\(a previous search.json is left as it was\)$",
    ):
        write_atomic(target, full)
    assert target.read_text() == "the previous result\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["search.json"]  # no temporary left


def test_torch_save_on_a_full_disk_is_recognised(tmp_path):
    # /dev/full answers every write with ENOSPC: what torch.save then raises is what the writers must recognise
    torch = pytest.importorskip("torch")
    from effnet.io import write_failure

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with pytest.raises(Exception) as raised:
        torch.save({"w": torch.zeros(1_000_000)}, "/dev/full")
    assert "no space left on the disk" in str(write_failure(tmp_path / "last.pt", raised.value))


def test_write_together_replaces_no_file_unless_all_are_written(tmp_path):
    import errno

    from effnet.io import WriteError, write_together

    first, second = tmp_path / "predictions" / "b0.npz", tmp_path / "metrics" / "b0.json"
    write_text(first, "old predictions")
    write_text(second, "old metrics")

    def fail(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError, match="metrics/b0.json: could not be written: no space left"):
        write_together([(first, lambda tmp: tmp.write_text("new predictions")), (second, fail)])
    assert (first.read_text(), second.read_text()) == ("old predictions", "old metrics")  # they still agree
    assert sorted(p.name for d in (first.parent, second.parent) for p in d.iterdir()) == ["b0.json", "b0.npz"]
    write_together(
        [(first, lambda tmp: tmp.write_text("new predictions")), (second, lambda tmp: tmp.write_text("new"))]
    )
    assert (first.read_text(), second.read_text()) == ("new predictions", "new")


def test_ensure_writable_names_a_read_only_directory(tmp_path, monkeypatch):
    import errno

    from effnet.io import WriteError, ensure_writable

    read_only = tmp_path / "metrics"
    read_only.mkdir()
    real = Path.write_bytes

    def write_bytes(self, data):  # a read-only directory, as a non-root user meets it (root writes anywhere)
        if self.parent == read_only:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    ensure_writable([tmp_path / "predictions" / "b0.npz"])  # created, writable
    with pytest.raises(
        WriteError,
        match=rf"{read_only}/b0.json: could not be written: {read_only} is not writable; "
        rf"make it writable \(chmod u\+w {read_only}\) and rerun",
    ):
        ensure_writable([tmp_path / "predictions" / "b0.npz", read_only / "b0.json"])
    assert sorted(p.name for p in read_only.iterdir()) == []
