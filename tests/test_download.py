"""effnet/download.py and stages/download.py: fetching, verifying and reading the archive."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import socket
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from effnet.download import MEMBERS, DataError, fetch, file_md5, read_cifar100

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------
# a real HTTP server on 127.0.0.1
# --------------------------------------------------------------------------------------


class ArchiveServer:
    """Serves `payload` at /cifar-100-python.tar.gz, with Range support and scripted failures.

    mode: 'ok'; 'drop_once' (the first response stops half-way and closes the connection);
    'error' (always HTTP 500); 'ignore_range' (always 200 with the whole file).
    """

    def __init__(self, payload: bytes, mode: str = "ok") -> None:
        self.payload, self.mode = payload, mode
        self.requests: list[dict] = []  # per request: the Range header and the body bytes sent
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                record = {"range": self.headers.get("Range"), "sent": 0}
                server.requests.append(record)
                if server.mode == "error":
                    self.send_error(500, "boom")
                    return
                start = 0
                if record["range"] and server.mode != "ignore_range":
                    start = int(record["range"].removeprefix("bytes=").split("-")[0])
                body = server.payload[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.mode == "drop_once" and len(server.requests) == 1:
                    body = body[: len(body) // 2]  # then the handler returns and the socket closes
                self.wfile.write(body)
                record["sent"] = len(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-100-python.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(synthetic_archive):
    servers = []

    def start(mode: str = "ok") -> ArchiveServer:
        servers.append(ArchiveServer(synthetic_archive[0].read_bytes(), mode))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_http_download_verifies_and_downloads_once(serve, synthetic_archive, tmp_path):
    _, md5 = synthetic_archive
    server = serve()
    dest = tmp_path / "raw" / "cifar-100-python.tar.gz"
    assert fetch(server.url, dest, md5) == dest
    assert file_md5(dest) == md5 and not dest.with_suffix(".gz.partial").exists()
    assert [r["range"] for r in server.requests] == [None]
    fetch(server.url, dest, md5)  # already there with the right md5: no second request
    assert len(server.requests) == 1


def test_http_resume_requests_only_the_rest(serve, synthetic_archive, tmp_path):
    path, md5 = synthetic_archive
    payload = path.read_bytes()
    server = serve()
    dest = tmp_path / "cifar-100-python.tar.gz"
    k = 12345
    dest.with_suffix(".gz.partial").write_bytes(payload[:k])
    fetch(server.url, dest, md5)
    assert file_md5(dest) == md5
    assert server.requests == [{"range": f"bytes={k}-", "sent": len(payload) - k}]


def test_http_server_ignoring_range_restarts(serve, synthetic_archive, tmp_path):
    path, md5 = synthetic_archive
    server = serve("ignore_range")
    dest = tmp_path / "cifar-100-python.tar.gz"
    dest.with_suffix(".gz.partial").write_bytes(path.read_bytes()[:5000])
    fetch(server.url, dest, md5)
    assert file_md5(dest) == md5  # not the first 5000 bytes followed by the whole file
    assert server.requests[0]["range"] == "bytes=5000-"


def test_http_dropped_connection_is_resumed(serve, synthetic_archive, tmp_path):
    path, md5 = synthetic_archive
    size = path.stat().st_size
    server = serve("drop_once")
    dest = tmp_path / "cifar-100-python.tar.gz"
    fetch(server.url, dest, md5, retries=3, backoff=0)
    assert file_md5(dest) == md5
    first, second = server.requests
    assert first == {"range": None, "sent": size // 2}
    assert second == {"range": f"bytes={size // 2}-", "sent": size - size // 2}


def test_http_500_gives_up_after_bounded_retries(serve, synthetic_archive, tmp_path):
    server = serve("error")
    dest = tmp_path / "cifar-100-python.tar.gz"
    with pytest.raises(DataError, match="HTTP 500") as error:
        fetch(server.url, dest, synthetic_archive[1], retries=2, backoff=0)
    assert len(server.requests) == 3
    assert "data.url" in str(error.value) and not dest.exists()


def test_unreachable_url_says_network_and_mirror(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError) as error:
        fetch(f"http://127.0.0.1:{port}/cifar-100-python.tar.gz", tmp_path / "a.tar.gz", "0" * 32, retries=1, backoff=0)
    message = str(error.value)
    assert "unreachable" in message and "data.url=" in message and "data.md5=" in message
    assert "489088aff4823e5bdf2d51ec904dbfdb" in message


# --------------------------------------------------------------------------------------
# local sources and checksums
# --------------------------------------------------------------------------------------


def test_file_url_and_plain_paths(synthetic_archive, tmp_path, monkeypatch):
    path, md5 = synthetic_archive
    assert file_md5(fetch(path.as_uri(), tmp_path / "a" / "x.tar.gz", md5)) == md5
    assert file_md5(fetch(str(path), tmp_path / "b" / "x.tar.gz", md5)) == md5
    monkeypatch.chdir(path.parent)
    assert file_md5(fetch(path.name, tmp_path / "c" / "x.tar.gz", md5)) == md5  # relative


def test_missing_local_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "cifar-100-python.tar.gz"
    with pytest.raises(DataError, match="no such file") as error:
        fetch(str(missing), tmp_path / "x.tar.gz", "0" * 32)
    assert str(missing) in str(error.value)


def test_wrong_checksum_names_both_and_keeps_the_file(synthetic_archive, tmp_path):
    path, md5 = synthetic_archive
    dest = tmp_path / "raw" / "cifar-100-python.tar.gz"
    wrong = "0123456789abcdef0123456789abcdef"
    with pytest.raises(DataError) as error:
        fetch(str(path), dest, wrong)
    message = str(error.value)
    bad = dest.with_suffix(".gz.bad-md5")
    assert wrong in message and md5 in message and str(bad) in message and "data.md5" in message
    assert file_md5(bad) == md5 and not dest.exists() and not dest.with_suffix(".gz.partial").exists()


def test_stale_destination_is_fetched_again(synthetic_archive, tmp_path):
    path, md5 = synthetic_archive
    dest = tmp_path / "cifar-100-python.tar.gz"
    dest.write_bytes(b"stale")
    fetch(str(path), dest, md5)
    assert file_md5(dest) == md5


# --------------------------------------------------------------------------------------
# reading the archive
# --------------------------------------------------------------------------------------


def _tar_gz(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {name: tar.extractfile(name).read() for name in MEMBERS}


def test_read_matches_the_official_layout(synthetic_archive):
    path, _ = synthetic_archive
    data = read_cifar100(path)
    with tarfile.open(path) as tar:
        raw = pickle.load(tar.extractfile("cifar-100-python/train"), encoding="bytes")
    assert b"filenames" not in raw  # the mirror's test set has none either
    train = data["train"]
    assert train["images"].shape == (1000, 32, 32, 3) and train["images"].dtype == np.uint8
    assert data["test"]["images"].shape == (200, 32, 32, 3)
    # A row holds the R, G and B planes one after another: pixel (y, x) of channel c is at c*1024 + y*32 + x.
    assert np.array_equal(train["images"][7, 3, 5], raw[b"data"][7, [0 * 1024 + 3 * 32 + 5, 1024 + 101, 2048 + 101]])
    assert train["fine_labels"].dtype == np.int64 and train["fine_labels"].tolist() == raw[b"fine_labels"]
    assert train["coarse_labels"].tolist() == raw[b"coarse_labels"]
    assert len(data["fine_label_names"]) == 100 and data["fine_label_names"][0] == "apple"
    assert data["coarse_label_names"][-1] == "vehicles_2"


def test_read_with_filenames(tmp_path):
    from effnet.synthetic import write_synthetic_archive

    path = tmp_path / "c.tar.gz"
    write_synthetic_archive(path, train_per_class=2, test_per_class=1, with_filenames=True)
    assert read_cifar100(path)["train"]["images"].shape == (200, 32, 32, 3)


def test_truncated_and_non_gzip_archives(synthetic_archive, tmp_path):
    payload = synthetic_archive[0].read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match="truncated.*download it again"):
        read_cifar100(truncated)
    text = tmp_path / "page.tar.gz"
    text.write_text("<html>a captive portal</html>")
    with pytest.raises(DataError, match="not a gzip tar archive"):
        read_cifar100(text)
    plain_gzip = tmp_path / "plain.gz"
    plain_gzip.write_bytes(gzip.compress(b"not a tar" * 100))
    with pytest.raises(DataError, match="not a gzip tar archive"):
        read_cifar100(plain_gzip)


def test_missing_members_are_named(tmp_path):
    with pytest.raises(DataError) as error:
        read_cifar100(_tar_gz(tmp_path / "other.tar.gz", {"cifar-10-batches-py/data_batch_1": b"x"}))
    assert all(name in str(error.value) for name in MEMBERS)


def test_one_missing_member_is_named(synthetic_archive, tmp_path):
    members = _members(synthetic_archive[0])
    del members["cifar-100-python/meta"]
    with pytest.raises(DataError, match="missing member\\(s\\) cifar-100-python/meta$"):
        read_cifar100(_tar_gz(tmp_path / "no-meta.tar.gz", members))


def test_hostile_members_are_never_written(synthetic_archive, tmp_path, monkeypatch):
    members = _members(synthetic_archive[0])
    members["../evil"] = b"owned"
    members[str(tmp_path / "absolute-evil")] = b"owned"
    archive = _tar_gz(tmp_path / "hostile.tar.gz", members, links={"cifar-100-python/link": "/etc/passwd"})
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    data = read_cifar100(archive)
    assert data["train"]["images"].shape[0] == 1000
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing extracted anywhere


def test_symlink_in_place_of_a_member_is_refused(synthetic_archive, tmp_path):
    members = _members(synthetic_archive[0])
    del members["cifar-100-python/meta"]
    archive = _tar_gz(tmp_path / "link.tar.gz", members, links={"cifar-100-python/meta": "/etc/passwd"})
    with pytest.raises(DataError, match="cifar-100-python/meta is not a regular file"):
        read_cifar100(archive)


def test_pickle_with_foreign_globals_is_refused(synthetic_archive, tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    members = _members(synthetic_archive[0])
    members["cifar-100-python/meta"] = pickle.dumps({b"fine_label_names": Payload()}, protocol=2)
    with pytest.raises(DataError, match="not allowed"):
        read_cifar100(_tar_gz(tmp_path / "evil-pickle.tar.gz", members))


def test_labels_out_of_range_are_refused(synthetic_archive, tmp_path):
    members = _members(synthetic_archive[0])
    test = pickle.loads(members["cifar-100-python/test"], encoding="bytes")
    test[b"fine_labels"][0] = 100
    members["cifar-100-python/test"] = pickle.dumps(test, protocol=2)
    with pytest.raises(DataError, match="fine_labels.*0..99"):
        read_cifar100(_tar_gz(tmp_path / "labels.tar.gz", members))


# --------------------------------------------------------------------------------------
# the stage script, as DVC runs it
# --------------------------------------------------------------------------------------


def _params_file(tmp_path: Path, url: str, md5: str) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(url=url, md5=md5, val_per_class=3, seed=1)
    path = tmp_path / f"params-{md5[:6]}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _stage(params: Path, out: Path, cache: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "stages/download.py", "--params", str(params), "--out", str(out), "--cache", str(cache)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_stage_end_to_end(synthetic_archive, tmp_path):
    path, md5 = synthetic_archive
    out, cache = tmp_path / "cifar100", tmp_path / "raw"
    result = _stage(_params_file(tmp_path, str(path), md5), out, cache)
    assert result.returncode == 0, result.stderr
    assert "train    700 images, 7 per class" in result.stdout
    for split, per_class in (("train", 7), ("val", 3), ("test", 2)):
        with np.load(out / f"{split}.npz") as arrays:
            assert np.bincount(arrays["fine_labels"], minlength=100).tolist() == [per_class] * 100
    assert file_md5(cache / "cifar-100-python.tar.gz") == md5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar100", f"params-{md5[:6]}.yaml", "raw", "source"]

    # A failing run (wrong md5) says why, without a traceback, and keeps the good output.
    wrong = "f" * 32
    (cache / "cifar-100-python.tar.gz").unlink()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = _stage(_params_file(tmp_path, str(path), wrong), out, cache)
    assert result.returncode == 1
    assert result.stderr.startswith("error: checksum mismatch") and "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not list(tmp_path.glob("cifar100.*"))  # no temporary or half-written directory


def test_stage_failure_leaves_no_output(synthetic_archive, tmp_path):
    path, _ = synthetic_archive
    out = tmp_path / "cifar100"
    result = _stage(_params_file(tmp_path, str(path), "e" * 32), out, tmp_path / "raw")
    assert result.returncode == 1 and result.stderr.startswith("error:")
    assert not out.exists() and not list(tmp_path.glob("cifar100*"))


def test_stage_bad_params_is_an_error_line(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["val_per_class"] = 500
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    result = _stage(path, tmp_path / "out", tmp_path / "raw")
    assert result.returncode == 1 and "data.val_per_class" in result.stderr and "Traceback" not in result.stderr
