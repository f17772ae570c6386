"""Writing files safely: each is written to a temporary file in the same folder, then renamed into place."""

from __future__ import annotations

import functools
import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from gpunet.errors import GpunetError


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
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
