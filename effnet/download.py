"""Fetch the CIFAR-100 archive once, verify it, and read it without extracting anything.

`fetch` brings `cifar-100-python.tar.gz` to a local file: over HTTP(S) with resume and
bounded retries, or by copying a `file://` URL or a plain path (a mirror). The md5 that goes
with the URL is checked before the archive is opened at all. `read_cifar100` then reads the
three pickles of the official layout straight from the tar stream into memory, so no member
of the archive is ever written to disk.

This module needs only the standard library, numpy and tqdm, so the download stage runs on a
machine without torch.
"""

from __future__ import annotations

import codecs
import hashlib
import http.client
import io
import os
import pickle
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

# `dvc repro` takes no -S: parameters are overridden by `dvc exp run -S` or by editing params.yaml.
# tests/test_hints.py parses every `dvc ...` command in the code with dvc's own CLI parser.
MIRROR_HINT = (
    "to use a mirror or a local copy, point the stage at it together with that file's own md5, either by\n"
    "editing data.url and data.md5 in params.yaml and running `dvc repro`, or for one experiment with\n"
    "  dvc exp run -S data.url=/path/to/cifar-100-python.tar.gz -S data.md5=MD5_OF_THAT_FILE\n"
    "(this project's mirror, from the project root of the main checkout:\n"
    "  dvc exp run -S data.url=../shared/data/cifar-100-python.tar.gz -S data.md5=489088aff4823e5bdf2d51ec904dbfdb)"
)
MEMBERS = ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta")
NUM_FINE, NUM_COARSE = 100, 20
_CHUNK = 1 << 20


class DataError(Exception):
    """The data cannot be fetched, verified or read. The message says what and how to fix it."""


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# fetch
# --------------------------------------------------------------------------------------


def fetch(url: str, dest: Path, md5: str, *, retries: int = 3, timeout: float = 30, backoff: float = 1.0) -> Path:
    """Bring the file at `url` to `dest`, verified against `md5`; return `dest`.

    `url` is http(s)://, file:// or a plain local path. If `dest` already holds a file with
    this md5, nothing is done (download once). Otherwise the data goes to `<dest>.partial`
    first and is renamed into place only after its md5 matches, so `dest` is never a
    half-written or unverified file. HTTP downloads resume a leftover `.partial` with a
    Range request and retry transient failures (connection reset or refused, timeouts,
    5xx) `retries` times, sleeping `backoff * 2**attempt` seconds in between.
    """
    dest = Path(dest)
    md5 = md5.lower()
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if dest.is_file():
        if file_md5(dest) == md5:
            return dest
        print(f"{dest}: md5 differs from {md5}; fetching it again", file=sys.stderr)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(dest.suffix + ".partial")

    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        _download(url, partial, retries=retries, timeout=timeout, backoff=backoff)
    elif scheme == "file":
        parsed = urllib.parse.urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise DataError(
                f"data.url {url!r}: a file:// URL needs an absolute path (file:///abs/path), or give the plain path"
            )
        _copy_local(Path(urllib.request.url2pathname(parsed.path)), partial)
    elif scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # a path (or a Windows drive letter)
        _copy_local(Path(url), partial)
    else:
        raise DataError(f"data.url {url!r}: unsupported scheme '{scheme}'; use http(s)://, file:// or a local path")

    actual = file_md5(partial)
    if actual != md5:
        bad = dest.with_suffix(dest.suffix + ".bad-md5")
        os.replace(partial, bad)
        raise DataError(
            f"checksum mismatch for {url}: expected md5 {md5}, got {actual}.\n"
            f"The file was kept for inspection at {bad}.\n"
            f"If {url} is a mirror, it needs its own md5 (after checking it):\n"
            f"  dvc exp run -S data.url={url} -S data.md5={actual}\n" + MIRROR_HINT
        )
    os.replace(partial, dest)
    return dest


def _copy_local(source: Path, partial: Path) -> None:
    if not source.is_file():
        raise DataError(
            f"data.url: no such file {source} (resolved to {source.resolve()}); check the path, "
            "relative paths are taken from the directory the stage runs in (the project root)"
        )
    shutil.copyfile(source, partial)


class _Transient(Exception):
    """A failure worth retrying; `network` says whether the server was never reached."""

    def __init__(self, message: str, network: bool) -> None:
        super().__init__(message)
        self.network = network


def _download(url: str, partial: Path, *, retries: int, timeout: float, backoff: float) -> None:
    for attempt in range(retries + 1):
        try:
            _download_once(url, partial, timeout)
            return
        except _Transient as error:
            last = error
            if attempt < retries:
                print(f"{url}: {error}; retrying ({attempt + 1}/{retries})", file=sys.stderr)
                time.sleep(backoff * 2**attempt)
    if last.network:
        raise DataError(
            f"cannot download {url}: the network or the server is unreachable ({last}; tried {retries + 1} times).\n"
            + MIRROR_HINT
        )
    raise DataError(
        f"cannot download {url}: {last} (tried {retries + 1} times). "
        f"What arrived so far is kept in {partial} and the next run resumes it.\n" + MIRROR_HINT
    )


def _download_once(url: str, partial: Path, timeout: float) -> None:
    """One HTTP request: resume `partial` if it has bytes, else start it; raise `_Transient`."""
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "effnet-cifar100/1.0"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416:  # the partial is not a prefix the server recognises: start over
            partial.unlink()
            raise _Transient("server rejected the resume range, restarting", network=False) from error
        if error.code >= 500 or error.code in (408, 429):
            raise _Transient(f"server answered HTTP {error.code} {error.reason}", network=False) from error
        raise DataError(
            f"cannot download {url}: server answered HTTP {error.code} {error.reason}.\n" + MIRROR_HINT
        ) from error
    except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise _Transient(f"{type(reason).__name__}: {reason}", network=True) from error

    with response:
        content_range = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
        if have and response.status == 206 and content_range.startswith(f"bytes {have}-"):
            mode, start = "ab", have
        elif response.status == 206:  # a range we did not ask for: drop the partial, ask for all
            partial.unlink(missing_ok=True)
            raise _Transient(f"server answered an unexpected range ({content_range!r}), restarting", network=False)
        else:  # 200: the server ignored the Range header and sends the whole file
            mode, start = "wb", 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        received = 0
        bar = tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            desc=Path(urllib.parse.urlparse(url).path).name,
            disable=not sys.stderr.isatty(),
        )
        try:
            with open(partial, mode) as f, bar:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (ConnectionError, TimeoutError, http.client.HTTPException) as error:
            raise _Transient(
                f"transfer interrupted after {start + received} bytes ({type(error).__name__})", network=False
            ) from error
    if length is not None and received < int(length):
        raise _Transient(f"transfer interrupted after {start + received} of {total} bytes", network=False)


# --------------------------------------------------------------------------------------
# read
# --------------------------------------------------------------------------------------


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only.

    The pickles come from an archive whose md5 was verified against the one given with its
    URL, so they are trusted as much as that checksum; this allow-list is a second fence, in
    case someone points `data.md5` at a file they have not looked at: anything but numpy's
    array reconstruction (the only globals the official files use) and the codec call with
    which Python 3 pickles bytes at protocol 2 is refused.
    """

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("_codecs", "encode"): lambda: codecs.encode,  # how Python 3 writes bytes at protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR-100 pickle")
        return self._allowed[(module, name)]()


def _unpickle(raw: bytes, member: str) -> dict:
    try:
        # encoding='bytes': the files were written by Python 2, whose str keys become bytes.
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as error:
        raise DataError(f"{member}: not a readable CIFAR-100 pickle ({error})") from error
    if not isinstance(obj, dict):
        raise DataError(f"{member}: expected a dict, got {type(obj).__name__}")
    return obj


def _read_members(archive: Path) -> dict[str, bytes]:
    """Read the bytes of the expected members from the tar stream; never write anything."""
    if not Path(archive).is_file():
        raise DataError(f"{archive}: no such file; run the download stage first (dvc repro download)")
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r|gz") as tar:  # a stream: one pass, no seeking
            for member in tar:
                name = member.name.removeprefix("./")
                if name not in MEMBERS:
                    continue  # anything else (directories, stray or hostile names) is skipped
                if not member.isfile():
                    raise DataError(f"{archive}: member {name} is not a regular file (tar type {member.type!r})")
                if name in found:
                    raise DataError(f"{archive}: member {name} appears twice")
                found[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DataError(
            f"{archive}: not a gzip tar archive, or truncated ({type(error).__name__}: {error}); "
            "delete it and download it again"
        ) from error
    missing = [name for name in MEMBERS if name not in found]
    if missing:
        raise DataError(f"{archive}: not a CIFAR-100 python archive: missing member(s) {', '.join(missing)}")
    return found


def _split_arrays(batch: dict, member: str) -> dict[str, np.ndarray]:
    for key in (b"data", b"fine_labels", b"coarse_labels"):
        if key not in batch:
            raise DataError(f"{member}: missing key {key!r}; keys present: {sorted(batch)}")
    data = batch[b"data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise DataError(
            f"{member}: b'data' must be a uint8 array of shape (N, 3072), got "
            f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}"
        )
    n = data.shape[0]
    arrays = {}
    for key, count in ((b"fine_labels", NUM_FINE), (b"coarse_labels", NUM_COARSE)):
        labels = np.asarray(batch[key], dtype=np.int64)
        if labels.shape != (n,):
            raise DataError(f"{member}: {key!r} has shape {labels.shape}, expected ({n},) to match b'data'")
        if n and (labels.min() < 0 or labels.max() >= count):
            raise DataError(f"{member}: {key!r} must lie in 0..{count - 1}, got {labels.min()}..{labels.max()}")
        arrays[key.decode()] = labels
    # Each row is three 32x32 planes (R, G, B), row-major: (N, 3, 32, 32) -> (N, 32, 32, 3).
    arrays["images"] = np.ascontiguousarray(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
    return arrays


def read_cifar100(archive: Path) -> dict:
    """Read the official python-format archive into arrays.

    Returns {'train': {...}, 'test': {...}, 'fine_label_names': [100 str],
    'coarse_label_names': [20 str]}, where each split holds 'images' uint8 (N, 32, 32, 3),
    'fine_labels' int64 (N,) and 'coarse_labels' int64 (N,), in the archive's order. The
    b'filenames' key is not needed (the project's mirror has none in `test`).
    """
    raw = _read_members(Path(archive))
    out: dict[str, Any] = {}
    for split in ("train", "test"):
        member = f"cifar-100-python/{split}"
        out[split] = _split_arrays(_unpickle(raw[member], member), member)
    meta = _unpickle(raw["cifar-100-python/meta"], "cifar-100-python/meta")
    for key, count in ((b"fine_label_names", NUM_FINE), (b"coarse_label_names", NUM_COARSE)):
        names = meta.get(key)
        if not isinstance(names, list) or len(names) != count:
            raise DataError(f"cifar-100-python/meta: {key!r} must list {count} names, got {names!r:.80}")
        out[key.decode()] = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return out
