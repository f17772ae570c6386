"""Model and checkpoint files: weights plus a JSON header in an .npz, checked when read."""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpunet.backend import Backend
from gpunet.datasets import class_names
from gpunet.errors import GpunetError
from gpunet.files import atomic_write
from gpunet.model import MLP, sizes_of
from gpunet.version import __version__

MODEL_FORMAT = 1
PIXELS = 28 * 28


def save_model(path: Path, net: MLP, meta: dict[str, Any] | None = None) -> None:
    """Weights plus a JSON header: layer sizes, pixel scaling, gpunet version, format version, `meta`
    (train adds the dataset, its class names, epochs, device and test metrics)."""
    header = {"format": MODEL_FORMAT, "kind": "model", "gpunet": __version__, "sizes": list(net.sizes),
              "pixel_scale": "x / 255", **(meta or {})}
    _write_npz(path, net.state_dict(), header)


def load_model(path: Path, backend: Backend) -> tuple[MLP, dict[str, Any]]:
    """Load a model file (or a run directory's model.npz) onto `backend`.

    A damaged or mismatched file raises GpunetError naming it. The returned header always has "dataset" and
    "classes". The arrays are host numpy, so a model trained on cuda loads on cpu and back."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.npz"
    arrays, header = _read_npz(path, "model")
    try:
        sizes = sizes_of(arrays)
    except ValueError as e:
        raise GpunetError(f"{path}: damaged model file: {e}") from None
    if list(sizes) != header.get("sizes"):
        raise GpunetError(f"{path}: weights have sizes {list(sizes)} but the header says {header.get('sizes')}")
    header.setdefault("dataset", "mnist")
    if "classes" not in header:
        header["classes"] = class_names(header["dataset"])
    if sizes[0] != PIXELS or sizes[-1] != len(header["classes"]):
        raise GpunetError(f"{path}: the model maps {sizes[0]} inputs to {sizes[-1]} classes; a gpunet model maps "
                          f"{PIXELS} pixels to the {len(header['classes'])} classes of {header['dataset']}")
    return MLP.from_state_dict(backend, arrays), header


@dataclass
class Checkpoint:
    """Everything needed to continue a run exactly: weights, optimizer state, the partial epoch's sums, `meta`
    (format, config, dataset, `epoch` completed, `step` done in the next epoch, history, RNG seed, the best
    epoch on validation so far) and that epoch's weights (`best`; empty without a validation split)."""

    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    sums: dict[str, np.ndarray]
    meta: dict[str, Any]
    best: dict[str, np.ndarray] = field(default_factory=dict)


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    header = {"format": MODEL_FORMAT, "kind": "checkpoint", "gpunet": __version__,
              "sizes": list(sizes_of(ckpt.params)), **ckpt.meta}
    arrays = {**{f"param.{k}": v for k, v in ckpt.params.items()},
              **{f"opt.{k}": v for k, v in ckpt.optimizer.items()},
              **{f"sum.{k}": v for k, v in ckpt.sums.items()}, **{f"best.{k}": v for k, v in ckpt.best.items()}}
    _write_npz(path, arrays, header)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint.npz; GpunetError naming the file when it is missing, damaged or not a checkpoint."""
    arrays, header = _read_npz(Path(path), "checkpoint")
    groups: dict[str, dict[str, np.ndarray]] = {"param": {}, "opt": {}, "sum": {}, "best": {}}
    for key, value in arrays.items():
        group, _, name = key.partition(".")
        if group not in groups:
            raise GpunetError(f"{path}: damaged checkpoint: unexpected array {key!r}")
        groups[group][name] = value
    try:
        sizes = sizes_of(groups["param"])
    except ValueError as e:
        raise GpunetError(f"{path}: damaged checkpoint: {e}") from None
    missing = {"config", "epoch", "step", "history"} - set(header)
    if missing:
        raise GpunetError(f"{path}: damaged checkpoint: no {', '.join(sorted(missing))} in its metadata")
    if list(sizes) != header.get("sizes"):
        raise GpunetError(f"{path}: weights have sizes {list(sizes)} but the header says {header.get('sizes')}")
    return Checkpoint(groups["param"], groups["opt"], groups["sum"], header, groups["best"])


def _write_npz(path: Path, arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
    arrays = {**arrays, "meta": np.asarray(json.dumps(header))}
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _read_npz(path: Path, kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and JSON header of a gpunet .npz of `kind` ("model" or "checkpoint"), checked."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise GpunetError(f"{path}: {kind} file not found") from None
    except IsADirectoryError:
        raise GpunetError(f"{path}: is a directory, not a {kind} file") from None
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise GpunetError(f"{path}: not a readable gpunet {kind} file ({e})") from None
    try:
        header = json.loads(str(arrays.pop("meta")))
    except (KeyError, ValueError):
        header = None
    if not isinstance(header, dict):
        raise GpunetError(f"{path}: not a gpunet {kind} file (no metadata)") from None
    if header.get("format") != MODEL_FORMAT:
        raise GpunetError(f"{path}: file format {header.get('format')!r} is not {MODEL_FORMAT}; "
                          f"it was written by another gpunet version ({header.get('gpunet')})")
    if header.get("kind") != kind:
        raise GpunetError(f"{path}: this is a gpunet {header.get('kind')} file, not a {kind} file")
    return arrays, header
