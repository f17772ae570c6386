"""Model and checkpoint files: weights plus a JSON header in an .npz, checked when read."""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gpunet.core.backend import Backend
from gpunet.runs.config import KEYS, check_value, is_int
from gpunet.data.datasets import DATASETS, NUM_CLASSES, class_names
from gpunet.errors import GpunetError
from gpunet.files import atomic_write
from gpunet.core.model import MLP, sizes_of
from gpunet.core.optim import OPTIMIZER_SLOTS
from gpunet.version import __version__

MODEL_FORMAT = 1
PIXELS = 28 * 28
MAX_PARAMETERS = 50_000_000  # weights and biases of a net gpunet trains or loads (400 MB in float64)
PARAMETER_BUDGET = 4 * MAX_PARAMETERS + 1_000  # numbers in a file: the weights, two optimizer slots, the best epoch's
#                                                weights, counters
MAX_META = 1_000_000  # characters of a file's JSON header


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
    sizes = _sizes(path, arrays, header, "model")
    _check_fields(path, header, MODEL_FIELDS)
    header.setdefault("dataset", "mnist")
    _check(path, header["dataset"] in DATASETS,
           f"dataset {_short(header['dataset'])} is not one of {', '.join(DATASETS)}", "model")
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
    """Read a checkpoint.npz; GpunetError naming the file when it is missing, damaged or not a checkpoint.

    Every field is checked (config keys, counters, history, optimizer state and sums against the weights'
    shapes, the best epoch's weights), so a resumed run never fails on a bad checkpoint after it has started."""
    path = Path(path)
    arrays, header = _read_npz(path, "checkpoint")
    groups: dict[str, dict[str, np.ndarray]] = {"param": {}, "opt": {}, "sum": {}, "best": {}}
    for key, value in arrays.items():
        group, _, name = key.partition(".")
        _check(path, group in groups, f"unexpected array {key!r}")
        groups[group][name] = value
    params, opt, sums, best = groups["param"], groups["opt"], groups["sum"], groups["best"]
    sizes = _sizes(path, params, header, "checkpoint")
    _check_fields(path, header, CHECKPOINT_FIELDS)
    config = header["config"]
    _check(path, set(config) == set(KEYS), f"config has keys {sorted(config)}, expected {sorted(KEYS)}")
    try:
        config = {k: check_value(f"{path}: config", k, v) for k, v in config.items()}
    except GpunetError as e:
        raise GpunetError(f"damaged checkpoint: {e}") from None
    except (OverflowError, TypeError, ValueError):  # e.g. an integer too big for a float
        raise GpunetError(f"{path}: damaged checkpoint file: config values are not what gpunet writes") from None
    _check(path, header["dataset"] in DATASETS, f"dataset {header['dataset']!r} is unknown")
    _check(path, list(sizes) == [PIXELS, *config["hidden"], NUM_CLASSES],
           f"weights of sizes {list(sizes)} do not match hidden = {config['hidden']}")
    _check(path, header["epoch"] < config["epochs"] or header["step"] == 0, "epoch and step are past the run's end")
    history = header["history"]
    _check(path, len(history) == header["epoch"], f"history has {len(history)} rows for {header['epoch']} epochs")
    for row in history:
        _check(path, isinstance(row, dict) and all(_is_number(v) for v in row.values())
               and set(HISTORY_KEYS) <= set(row), "history rows are not the numbers of one epoch each")
    slots = OPTIMIZER_SLOTS[config["optimizer"]]
    expected = {"t": ()} | {f"{s}.{k}": v.shape for s in slots for k, v in params.items()}
    _check(path, {k: v.shape for k, v in opt.items()} == expected,
           f"optimizer state {sorted(opt)} does not fit a {config['optimizer']} optimizer of these weights")
    _check(path, opt["t"].dtype.kind in "iu" and int(opt["t"]) >= 0, "optimizer step count is not a count")
    wanted_sums = {"loss_sum": "f", "correct": "iu"} if header["step"] else {}
    _check(path, set(sums) == set(wanted_sums) and all(sums[k].shape == () and sums[k].dtype.kind in kinds
                                                       for k, kinds in wanted_sums.items()),
           "the partial epoch's sums are missing or malformed")
    _check(path, not best or {k: v.shape for k, v in best.items()} == {k: v.shape for k, v in params.items()},
           "the best epoch's weights do not match the weights")
    _check(path, header["best"]["epoch"] <= header["epoch"], "the best epoch is past the epochs trained")
    header["config"] = config
    return Checkpoint(params, opt, sums, header, best)


def _write_npz(path: Path, arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
    arrays = {**arrays, "meta": np.asarray(json.dumps(header))}
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _check(path: Path, ok: bool, problem: str, kind: str = "checkpoint") -> None:
    if not ok:
        raise GpunetError(f"{path}: damaged {kind} file: {problem}")


def _is_number(v: Any) -> bool:
    """A finite int or float that fits a float (JSON integers have no size limit)."""
    return (is_int(v) and abs(v) < 2 ** 1000) or (isinstance(v, float) and math.isfinite(v))


# Header schemas: key -> (check, what it must be). Keys not listed are kept and never used.
Field = tuple[Callable[[Any], bool], str]
COMMON_FIELDS: dict[str, Field] = {
    "gpunet": (lambda v: isinstance(v, str), "a version string"),
    "sizes": (lambda v: isinstance(v, list) and len(v) >= 2 and all(is_int(n) and n >= 1 for n in v),
              "a list of layer widths"),
}
MODEL_FIELDS: dict[str, Field] = {
    **COMMON_FIELDS,
    "pixel_scale": (lambda v: v == "x / 255", '"x / 255"'),
    "dataset": (lambda v: isinstance(v, str), "a dataset name"),
    "classes": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v), "a list of class names"),
    "device": (lambda v: isinstance(v, str), "a device name"),
    "epochs": (lambda v: is_int(v) and v >= 0, "an epoch count"),
    "test_accuracy": (lambda v: v is None or (_is_number(v) and 0 <= v <= 1), "a number in [0, 1]"),
    "test_loss": (lambda v: v is None or (_is_number(v) and v >= 0), "a number >= 0"),
    "best_epoch": (lambda v: is_int(v) and v >= 0, "an epoch number"),
    "val_accuracy": (lambda v: v is None or (_is_number(v) and 0 <= v <= 1), "a number in [0, 1]"),
    "val_loss": (lambda v: v is None or (_is_number(v) and v >= 0), "a number >= 0"),
}
CHECKPOINT_FIELDS: dict[str, Field] = {
    **COMMON_FIELDS,
    "config": (lambda v: isinstance(v, dict), "a table of config keys"),
    "dataset": (lambda v: isinstance(v, str), "a dataset name"),
    "train_samples": (lambda v: is_int(v) and v >= 1, "a sample count"),
    "epoch": (lambda v: is_int(v) and v >= 0, "an epoch count"),
    "step": (lambda v: is_int(v) and v >= 0, "a step count"),
    "epoch_seconds": (lambda v: _is_number(v) and v >= 0, "seconds"),
    "history": (lambda v: isinstance(v, list), "a list of epochs"),
    "validation": (lambda v: v is None or isinstance(v, dict), "the validation split's description"),
    "best": (lambda v: isinstance(v, dict) and is_int(v.get("epoch")) and v["epoch"] >= 0
             and all(v.get(k) is None or _is_number(v[k]) for k in ("val_accuracy", "val_loss")),
             "the best epoch and its validation scores"),
}
REQUIRED = {"model": ("sizes",), "checkpoint": tuple(CHECKPOINT_FIELDS)}
HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "seconds")  # and val_loss, val_accuracy with validation


def _check_fields(path: Path, header: dict[str, Any], fields: dict[str, Field]) -> None:
    """Every field of `header` named in `fields` passes its check; the required ones are present."""
    kind = "checkpoint" if fields is CHECKPOINT_FIELDS else "model"
    missing = [k for k in REQUIRED[kind] if k not in header]
    if missing:
        raise GpunetError(f"{path}: damaged {kind} file: no {', '.join(missing)} in its metadata")
    for key, (ok, what) in fields.items():
        if key in header and not ok(header[key]):
            raise GpunetError(f"{path}: damaged {kind} file: {key} = {_short(header[key])} is not {what}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _sizes(path: Path, params: dict[str, np.ndarray], header: dict[str, Any], kind: str) -> tuple[int, ...]:
    """The layer widths of `params`, checked against the header's "sizes"."""
    try:
        sizes = sizes_of(params)
    except ValueError as e:
        raise GpunetError(f"{path}: damaged {kind} file: {e}") from None
    if list(sizes) != header.get("sizes"):
        raise GpunetError(f"{path}: weights have sizes {list(sizes)} but the header says {_short(header.get('sizes'))}")
    return sizes


def _member_header(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an .npy member declares, read from its header without reading its data."""
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}[version]
        shape, _, dtype = read(f, max_header_size=1000)
    return shape, dtype


def _declared(path: Path, kind: str) -> None:
    """Check every member's declared name, dtype and shape before anything is read: weights and optimizer
    state are float32/float64, counters integers, the metadata one string of at most MAX_META characters,
    and all arrays together hold at most PARAMETER_BUDGET numbers (GpunetError otherwise)."""
    if path.stat().st_size > 8 * PARAMETER_BUDGET + 4 * MAX_META + 100_000:
        raise GpunetError(f"{path}: {path.stat().st_size:,} bytes, too big for a gpunet {kind} file")
    total = 0
    with zipfile.ZipFile(path) as z:
        if len(z.infolist()) > 100:
            raise GpunetError(f"{path}: damaged {kind} file: {len(z.infolist())} arrays")
        for info in z.infolist():
            name = info.filename.removesuffix(".npy")
            shape, dtype = _member_header(z, info)
            count = math.prod(shape)
            if name == "meta":
                ok = shape == () and dtype.kind == "U" and dtype.itemsize <= 4 * MAX_META
            elif name in ("opt.t", "sum.correct"):
                ok = shape == () and dtype.kind in "iu"
            else:
                ok = dtype.kind == "f" and dtype.itemsize in (4, 8) and len(shape) <= 2
            if not ok or info.file_size > 1024 + count * dtype.itemsize:
                raise GpunetError(f"{path}: damaged {kind} file: array {name!r} is {dtype} {shape}, "
                                  "which a gpunet file never holds")
            total += count
            if total > PARAMETER_BUDGET:
                raise GpunetError(f"{path}: declares {total:,} numbers, over the limit of {PARAMETER_BUDGET:,} "
                                  f"({MAX_PARAMETERS:,} parameters with their optimizer state); refusing to load it")


def _read_npz(path: Path, kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and JSON header of a gpunet .npz of `kind` ("model" or "checkpoint"), checked: declared
    sizes and types before any data is read, then finite values and the header's format and kind."""
    try:
        _declared(path, kind)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise GpunetError(f"{path}: {kind} file not found") from None
    except IsADirectoryError:
        raise GpunetError(f"{path}: is a directory, not a {kind} file") from None
    except GpunetError:
        raise
    except Exception as e:  # noqa: BLE001  any damage (zip, npy header, zlib, ...) is one line
        raise GpunetError(f"{path}: not a readable gpunet {kind} file ({type(e).__name__}: {e})") from None
    try:
        header = json.loads(str(arrays.pop("meta")))
    except (KeyError, ValueError, RecursionError):
        header = None
    if not isinstance(header, dict):
        raise GpunetError(f"{path}: not a gpunet {kind} file (no metadata)") from None
    if header.get("format") != MODEL_FORMAT:
        raise GpunetError(f"{path}: file format {_short(header.get('format'))} is not {MODEL_FORMAT}; "
                          f"it was written by another gpunet version ({_short(header.get('gpunet'))})")
    if header.get("kind") != kind:
        other = header.get("kind") if header.get("kind") in ("model", "checkpoint") else _short(header.get("kind"))
        raise GpunetError(f"{path}: this is a gpunet {other} file, not a {kind} file")
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise GpunetError(f"{path}: damaged {kind} file: array {name!r} holds NaN or infinite values")
    return arrays, header
