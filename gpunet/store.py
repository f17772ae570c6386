"""Files a run leaves behind, each written atomically: a temporary file in the same folder, then a rename."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

import gpunet
from gpunet.backend import Backend
from gpunet.errors import GpunetError
from gpunet.model import MLP, sizes_of

MODEL_FORMAT = 1


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call `write(file)` on a temporary file beside `path`, then rename it over `path`.

    An interrupted write leaves `path` as it was (absent or the previous complete version)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda f: json.dump(data, f, indent=2), mode="w")


def save_model(path: Path, net: MLP, meta: dict[str, Any] | None = None) -> None:
    """Weights plus a JSON header: layer sizes, pixel scaling, gpunet version, format version, `meta`."""
    header = {"format": MODEL_FORMAT, "gpunet": gpunet.__version__, "sizes": list(net.sizes),
              "pixel_scale": "x / 255", **(meta or {})}
    arrays = {**net.state_dict(), "meta": np.asarray(json.dumps(header))}
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_model(path: Path, backend: Backend) -> tuple[MLP, dict[str, Any]]:
    """Load a model file onto `backend`; a damaged or mismatched file raises GpunetError naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise GpunetError(f"{path}: model file not found") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise GpunetError(f"{path}: not a readable gpunet model file ({e})") from None
    try:
        header = json.loads(str(arrays.pop("meta")))
    except (KeyError, ValueError):
        raise GpunetError(f"{path}: not a gpunet model file (no metadata)") from None
    if header.get("format") != MODEL_FORMAT:
        raise GpunetError(f"{path}: model format {header.get('format')!r} is not {MODEL_FORMAT}; "
                          f"it was written by another gpunet version ({header.get('gpunet')})")
    try:
        sizes = sizes_of(arrays)
    except ValueError as e:
        raise GpunetError(f"{path}: damaged model file: {e}") from None
    if list(sizes) != header.get("sizes"):
        raise GpunetError(f"{path}: weights have sizes {list(sizes)} but the header says {header.get('sizes')}")
    return MLP.from_state_dict(backend, arrays), header
