"""Downloads into the cache: each file streamed from its mirrors in turn, checked, then renamed into place.

A mirror is abandoned for the next on any failure: an HTTP error, no answer within the timeout, a wrong size, a
SHA-256 that is not the pinned one. Bytes go to a temporary file beside the target, renamed over it only once the
checksum passed, so the cache never holds a partial or unverified download.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from gpunet.data.datasets import DataFile, Dataset
from gpunet.errors import GpunetError
from gpunet.files import atomic_write, make_dir
from gpunet.data.idx import read_idx
from gpunet.data.locate import cache_dir, file_path
from gpunet.version import __version__

DEFAULT_TIMEOUT = 30.0  # seconds to connect, and to wait for each read
CHUNK = 1 << 16


class Rejected(Exception):
    """The mirror answered, but not with the pinned file."""


def why(e: BaseException, timeout: float) -> str:
    """A short reason for a failed attempt."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError) and isinstance(e.reason, BaseException):
        e = e.reason
    if isinstance(e, TimeoutError):
        return f"timed out (no answer within {timeout:g} s)"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def stream(response: BinaryIO, out: BinaryIO, f: DataFile, progress: Progress, task: int) -> None:
    """Copy `response` to `out`, refusing more or fewer bytes than `f.gz_size` or another SHA-256."""
    digest, n = hashlib.sha256(), 0
    while chunk := response.read(CHUNK):
        n += len(chunk)
        if n > f.gz_size:
            raise Rejected(f"wrong size: more than the expected {f.gz_size} bytes")
        digest.update(chunk)
        out.write(chunk)
        progress.update(task, completed=n)
    if n != f.gz_size:
        raise Rejected(f"wrong size: {n} bytes, expected {f.gz_size}")
    if digest.hexdigest() != f.gz_sha256:
        raise Rejected(f"checksum mismatch: SHA-256 {digest.hexdigest()}, expected {f.gz_sha256}")


def download(ds: Dataset, f: DataFile, dest: Path, timeout: float, progress: Progress) -> None:
    """Put a verified `f` at `dest`, trying each mirror in turn; GpunetError listing every failure otherwise."""
    failures = []
    task = progress.add_task(f"{f.name}.gz", total=f.gz_size)
    for url in ds.urls(f):
        progress.reset(task, total=f.gz_size)
        try:
            request = urllib.request.Request(url, headers={"User-Agent": f"gpunet/{__version__}"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                announced = response.headers.get("Content-Length")
                if announced is not None and int(announced) != f.gz_size:
                    raise Rejected(f"wrong size: the server announces {announced} bytes, expected {f.gz_size}")
                atomic_write(dest, lambda out: stream(response, out, f, progress, task))
            if not progress.disable:  # the mirrors passed over (when every one fails, the error lists them)
                for line in failures:
                    progress.console.print(line, markup=False, highlight=False)
            return
        except (OSError, http.client.HTTPException, ValueError, Rejected) as e:
            if isinstance(e, urllib.error.HTTPError):
                e.close()
            failures.append(f"  {url}: {why(e, timeout)}")
    names = ", ".join(f"{g.name}.gz" for g in ds.files)
    raise GpunetError(
        f"could not download {f.name}.gz of {ds.name} from any mirror:\n" + "\n".join(failures) +
        f"\nRun `gpunet data fetch {ds.name}` when a mirror is reachable, or place the files by hand: copy "
        f"{names} into {dest.parent}/ (or into a folder given with --data-dir), then check them with "
        f"`gpunet data verify {ds.name}`.")


def fetch(ds: Dataset, force: bool = False, timeout: float = DEFAULT_TIMEOUT, console: Console | None = None) -> Path:
    """Make the cache folder hold a verified copy of `ds` and return it.

    Files already there and verified are kept. A damaged cached file stops the fetch, naming it, unless `force`:
    then every file is downloaded again, each replacing the cached one only after its checksum passed. The
    progress bars and each mirror passed over for a later one go to `console` when given (without one, nothing
    is printed); when every mirror fails, the GpunetError lists them."""
    folder = cache_dir(ds.name)
    todo = []
    for f in ds.files:
        path = file_path(folder, f)
        if path is None or force:
            todo.append(f)
            continue
        try:
            read_idx(path, f.sha256, f.size)
        except GpunetError as e:
            raise GpunetError(f"{e}; `gpunet data fetch {ds.name} --force` downloads it again") from None
    if not todo:
        return folder
    created = [d for d in (folder, *folder.parents) if not d.exists()]  # removed again if the fetch fails
    make_dir(folder, "cache folder", "; set XDG_CACHE_HOME to a writable folder")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn(), console=console, disable=console is None)
    try:
        with progress:
            for f in todo:
                download(ds, f, folder / f"{f.name}.gz", timeout, progress)
    except BaseException:
        for d in created:
            if not any(d.iterdir()):
                d.rmdir()
        raise
    return folder
