"""Files, read and written safely: only regular files are read, and no more of them than a limit; each file is
written to a temporary file in the same folder, then renamed into place; a run directory is claimed by one
process at a time."""

from __future__ import annotations

import contextlib
import functools
import errno
import json
import math
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from gpunet.errors import GpunetError

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows)
    fcntl = None

STALE_TMP_SECONDS = 3600  # a temporary file of ours untouched this long is left from a killed write
FRESH_TMP_SECONDS = 60  # one younger than this is never removed, even when its process seems gone


def open_regular(path: Path | str) -> BinaryIO:
    """`path` opened for binary reading, if it is a regular file (after symlinks); checked on the opened file, so
    it cannot be swapped in between. A device, FIFO or socket is GpunetError (a FIFO is opened without blocking,
    so it cannot hang); a missing path or a directory raises FileNotFoundError or IsADirectoryError as open()."""
    _regular(path, os.stat(path).st_mode)  # a socket cannot even be opened
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        _regular(path, os.fstat(fd).st_mode)  # what was opened, had the path changed meanwhile
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _regular(path: Path | str, mode: int) -> None:
    """IsADirectoryError for a directory, GpunetError for anything else that is not a regular file."""
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a plain file")
        raise GpunetError(f"{path}: {kind}, not a regular file; give a file")


def read_limited(path: Path | str, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them (GpunetError naming `what` for a bigger
    file, a missing one or one that is not a regular file)."""
    try:
        with open_regular(path) as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise GpunetError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise GpunetError(f"{path}: is a directory, not a {what}") from None
    except OSError as e:
        raise GpunetError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(data) > limit:
        raise GpunetError(f"{path}: over {limit:,} bytes, too big for a {what}")
    return data


def read_json(path: Path | str, limit: int, what: str = "JSON file") -> Any:
    """The JSON value in the regular file `path` of at most `limit` bytes; GpunetError (one line) for a file that
    is missing, too big, not JSON, nested too deeply or holding an integer too long to convert."""
    data = read_limited(path, limit, what)
    try:
        return json.loads(data)
    except RecursionError:
        raise GpunetError(f"{path}: not a readable {what} (nested too deeply)") from None
    except ValueError as e:  # bad JSON, bad UTF-8, or an integer over Python's 4,300 digits
        raise GpunetError(f"{path}: not a readable {what} ({str(e)[:200]})") from None


@functools.cache
def _umask() -> int:
    """The process umask, read once, at the first write (setting it and putting it back is the only portable
    way to read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_dir(path: Path, what: str, hint: str = "") -> None:
    """Create `path` and its parents; GpunetError naming `what` it is for (and `hint`) when it cannot be made."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GpunetError(f"{path}: cannot create the {what} ({e.strerror or e}){hint}") from None


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call `write(file)` on a temporary file beside `path`, then rename it over `path`.

    An interrupted or failed write (a full disk: one GpunetError naming `path`) leaves `path` as it was
    (absent or the previous complete version)."""
    path = Path(path)
    remove_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as e:
        raise GpunetError(f"{path}: cannot write there ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if not isinstance(e, OSError):
            raise
        full = " (the disk is full: free some space)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        kept = "the previous version is kept" if path.exists() else "nothing was written"
        raise GpunetError(f"{path}: cannot write ({e.strerror or e}){full}; {kept}") from None


def _running(pid: int) -> bool:
    """Whether process `pid` runs on this machine (True when it cannot tell)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files that writes of `path` killed midway (kill -9, power loss) left beside it: only
    ours (".NAME.PID.RANDOM.tmp", or ".NAME.RANDOM.tmp" from older versions), and only stale ones: their process
    is gone and they are FRESH_TMP_SECONDS old, or nothing has touched them for STALE_TMP_SECONDS."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"(?:(\d+)\.)?[A-Za-z0-9_]{6,}\.tmp")
    now = time.time()
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            age = now - st.st_mtime
            pid = match.group(1)
            gone = pid is not None and int(pid) != os.getpid() and not _running(int(pid))
            if stat.S_ISREG(st.st_mode) and ((gone and age > FRESH_TMP_SECONDS) or age > STALE_TMP_SECONDS):
                os.unlink(entry.path)
        except OSError:
            pass  # another process removed it, or it is not ours to remove


@contextlib.contextmanager
def claim_dir(path: Path, what: str = "run directory") -> Iterator[None]:
    """Create `path` (as make_dir) and hold it for this process while the block runs: a second claim, from any
    process, is GpunetError at once. The lock is an flock on the directory itself, released when the block ends
    or the process dies (even by kill -9), so a killed run never leaves its directory locked. (Without flock,
    on Windows, nothing is locked.) A directory made here and still empty when the block fails is removed."""
    created = not path.exists()
    make_dir(path, what)
    try:
        if fcntl is None:  # pragma: no cover
            yield
            return
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise GpunetError(f"{path}: cannot open the {what} ({e.strerror or e})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise GpunetError(f"{path}: another gpunet process is using this {what} now; wait for it to "
                                  "finish, or choose another directory") from None
            yield
        finally:
            os.close(fd)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(path)  # only if empty: a refused run leaves no directory behind
        raise


def finite(data: Any) -> Any:
    """`data` with every NaN or infinite float replaced by None, so that it is valid JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def json_text(data: Any, indent: int | None = 2) -> str:
    """Strict JSON (never a bare NaN or Infinity): non-finite numbers become null."""
    return json.dumps(finite(data), indent=indent, allow_nan=False)


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda f: f.write(json_text(data)), mode="w")
