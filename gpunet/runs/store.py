"""Model and checkpoint files: weights plus a JSON header in an .npz, checked when read."""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from gpunet.core.backend import Backend
from gpunet.runs.config import KEYS, MAX_EPOCHS, batch_rows, check_value, is_int
from gpunet.data.datasets import DATASETS, NUM_CLASSES, class_names
from gpunet.errors import GpunetError
from gpunet.files import atomic_write, open_regular
from gpunet.core.model import MLP, sizes_of
from gpunet.core.optim import OPTIMIZER_SLOTS
from gpunet.version import __version__

MODEL_FORMAT = 1
CHECKPOINT_FORMAT = 2  # 1: the history in the JSON header (still read); 2: the history as an array
FORMATS = {"model": (MODEL_FORMAT,), "checkpoint": (1, CHECKPOINT_FORMAT)}  # what each kind is read in
PIXELS = 28 * 28
MAX_PARAMETERS = 50_000_000  # weights and biases of a net gpunet trains or loads (400 MB in float64)
BUDGETS = {  # numbers in a file of each kind
    "model": MAX_PARAMETERS + 1_000,  # the weights
    "checkpoint": 4 * MAX_PARAMETERS + 8 * MAX_EPOCHS + 1_000,  # the weights, two optimizer slots, the best
}  #                                                               epoch's weights, the history, counters
BUDGET_NOTES = {"model": "", "checkpoint": f" with two optimizer slots and the best epoch's weights, and a history "
                                           f"of {MAX_EPOCHS:,} epochs"}
HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "seconds")
VAL_KEYS = ("val_accuracy", "val_loss")  # in the history with a validation split, and of the best epoch
MAX_META = 1_000_000  # characters of a file's JSON header
MAX_METRICS = 300 * MAX_EPOCHS + 1_000_000  # bytes of a run's metrics.json (a row of history per epoch)


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
    """The weights, optimizer state, sums, best weights and the history as arrays (the history as one
    (epochs, columns) float64 array, so a long run's header stays small), the rest of `meta` as the header."""
    meta = dict(ckpt.meta)
    history = meta.pop("history")
    columns = list(history[0]) if history else []
    header = {"format": CHECKPOINT_FORMAT, "kind": "checkpoint", "gpunet": __version__,
              "sizes": list(sizes_of(ckpt.params)), **meta, "history_columns": columns}
    arrays = {**{f"param.{k}": v for k, v in ckpt.params.items()},
              **{f"opt.{k}": v for k, v in ckpt.optimizer.items()},
              **{f"sum.{k}": v for k, v in ckpt.sums.items()}, **{f"best.{k}": v for k, v in ckpt.best.items()},
              "history": np.array([[row[c] for c in columns] for row in history], dtype=np.float64).reshape(
                  len(history), len(columns))}
    _write_npz(path, arrays, header)


def _history_rows(path: Path, table: np.ndarray | None, header: dict[str, Any]) -> list[dict[str, Any]]:
    """The history's rows: from the "history" array and the header's column names (format 2), or from the header
    itself (format 1)."""
    if header["format"] == 1:
        _check(path, table is None and "history" in header, "a format-1 checkpoint holds its history in its header")
        return header.pop("history")
    columns = header.pop("history_columns", None)
    _check(path, table is not None and "history" not in header and isinstance(columns, list)
           and all(isinstance(c, str) for c in columns) and len(set(columns)) == len(columns)
           and table.ndim == 2 and table.shape[1] == len(columns), "the history array does not match its columns")
    return [{c: int(v) if c == "epoch" and float(v).is_integer() else float(v) for c, v in zip(columns, row)}
            for row in table.tolist()]


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint.npz; GpunetError naming the file when it is missing, damaged or not a checkpoint.

    The whole checkpoint is checked (config keys, counters against the run's length and batches, history,
    validation split, the best epoch and its weights, optimizer state and sums against the weights' shapes), so
    a resumed run never fails on a bad checkpoint after it has started."""
    path = Path(path)
    arrays, header = _read_npz(path, "checkpoint")
    table = arrays.pop("history", None)
    groups: dict[str, dict[str, np.ndarray]] = {"param": {}, "opt": {}, "sum": {}, "best": {}}
    for key, value in arrays.items():
        group, _, name = key.partition(".")
        _check(path, group in groups, f"unexpected array {key!r}")
        groups[group][name] = value
    params, opt, sums, best = groups["param"], groups["opt"], groups["sum"], groups["best"]
    sizes = _sizes(path, params, header, "checkpoint")
    header["history"] = _history_rows(path, table, header)
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
    epoch, step, validation = header["epoch"], header["step"], header["validation"]
    _check(path, epoch <= config["epochs"] and (epoch < config["epochs"] or step == 0),
           "epoch and step are past the run's end")
    steps = math.ceil(header["train_samples"] / batch_rows(config["batch_size"], header["train_samples"]))
    _check(path, step < steps, f"step {step} is past the {steps} steps of an epoch")
    _check(path, (validation is None) == (config["val_size"] == 0),
           "the validation split does not match val_size in its config")
    history = header["history"]
    _check(path, len(history) == epoch, f"history has {len(history)} rows for {epoch} epochs")
    problem = history_problem(history, HISTORY_KEYS + (VAL_KEYS if validation else ()))
    _check(path, problem is None, str(problem))
    slots = OPTIMIZER_SLOTS[config["optimizer"]]
    expected = {"t": ()} | {f"{s}.{k}": v.shape for s in slots for k, v in params.items()}
    _check(path, {k: v.shape for k, v in opt.items()} == expected,
           f"optimizer state {sorted(opt)} does not fit a {config['optimizer']} optimizer of these weights")
    _check(path, opt["t"].dtype.kind in "iu" and int(opt["t"]) >= 0, "optimizer step count is not a count")
    wanted_sums = {"loss_sum": "f", "correct": "iu"} if step else {}
    _check(path, set(sums) == set(wanted_sums) and all(sums[k].shape == () and sums[k].dtype.kind in kinds
                                                       for k, kinds in wanted_sums.items())
           and (not step or (sums["loss_sum"] >= 0 and 0 <= int(sums["correct"]) <= header["train_samples"])),
           "the partial epoch's sums are missing or malformed")
    kept = header["best"]
    _check(path, kept["epoch"] <= epoch, "the best epoch is past the epochs trained")
    if validation is None or kept["epoch"] == 0:  # no kept weights: the last epoch's are kept, or none yet
        _check(path, not best and kept["val_accuracy"] is None and kept["val_loss"] is None,
               "the best epoch has validation scores or weights that no epoch gave")
    else:
        row = history[kept["epoch"] - 1]
        _check(path, (kept["val_accuracy"], kept["val_loss"]) == (row["val_accuracy"], row["val_loss"]),
               f"the best epoch's validation scores are not those of epoch {kept['epoch']} in the history")
        _check(path, {k: v.shape for k, v in best.items()} == {k: v.shape for k, v in params.items()},
               "the best epoch's weights do not match the weights")
    header["config"] = config
    return Checkpoint(params, opt, sums, header, best)


def history_problem(history: Any, required: tuple[str, ...] = HISTORY_KEYS) -> str | None:
    """What is wrong with a run's history, or None: it must be a list of one row per epoch (epochs 1, 2, ...),
    every row with the same columns, `required` among them, all finite numbers, accuracies in [0, 1], losses
    and seconds >= 0."""
    if not isinstance(history, list):
        return f"history is {type(history).__name__}, not a list of epochs"
    if len(history) > MAX_EPOCHS:
        return f"history has {len(history):,} epochs, over the limit of {MAX_EPOCHS:,}"
    columns = set(history[0]) if history and isinstance(history[0], dict) else set()
    missing = [k for k in required if k not in columns]
    if columns and missing:
        return f"history rows have no {', '.join(missing)}"
    for i, row in enumerate(history, 1):
        if not isinstance(row, dict) or set(row) != columns or not all(_is_number(v) for v in row.values()):
            return f"history row {i} is not the numbers of one epoch in the columns of row 1"
        if row["epoch"] != i:
            return f"history row {i} is epoch {_short(row['epoch'])}, not {i}"
        if any(not 0 <= v <= 1 for k, v in row.items() if k.endswith("_accuracy")) or \
                any(v < 0 for k, v in row.items() if k.endswith(("_loss", "seconds"))):
            return f"history row {i} has an accuracy outside [0, 1] or a negative loss or time"
    return None


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
    "validation": (lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("indices_sha256"), str)
                                            and is_int(v.get("samples")) and v["samples"] >= 1),
                   "the validation split's description"),
    "best": (lambda v: isinstance(v, dict) and set(v) == {"epoch", *VAL_KEYS} and is_int(v["epoch"])
             and v["epoch"] >= 0 and all(v[k] is None or _is_number(v[k]) for k in VAL_KEYS),
             "the best epoch and its validation scores"),
}
REQUIRED = {"model": ("sizes",), "checkpoint": tuple(CHECKPOINT_FIELDS)}


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


def _declared(f: BinaryIO, path: Path, kind: str) -> None:
    """Check every member's declared name, dtype and shape before anything is read: weights and optimizer
    state are float32/float64, counters integers, the metadata one string of at most MAX_META characters,
    and all arrays together hold at most the kind's budget of numbers (GpunetError otherwise)."""
    budget = BUDGETS[kind]
    size = os.fstat(f.fileno()).st_size
    if size > 8 * budget + 4 * MAX_META + 100_000:
        raise GpunetError(f"{path}: {size:,} bytes, too big for a gpunet {kind} file")
    total = 0
    with zipfile.ZipFile(f) as z:
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
            if total > budget:
                raise GpunetError(f"{path}: declares {total:,} numbers, over the limit of {budget:,} for a "
                                  f"{kind} file ({MAX_PARAMETERS:,} parameters{BUDGET_NOTES[kind]}); "
                                  "refusing to load it")


def _read_npz(path: Path, kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and JSON header of a gpunet .npz of `kind` ("model" or "checkpoint"), checked: a regular
    file, declared sizes and types before any data is read, then finite values and the header's format and kind."""
    try:
        with open_regular(path) as f:
            _declared(f, path, kind)
            f.seek(0)
            with np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise GpunetError(f"{path}: {kind} file not found") from None
    except IsADirectoryError:
        raise GpunetError(f"{path}: is a directory, not a {kind} file") from None
    except GpunetError:
        raise
    except Exception as e:  # noqa: BLE001  any damage (zip, npy header, zlib, ...) is one line
        raise GpunetError(f"{path}: not a readable gpunet {kind} file ({type(e).__name__}: {str(e)[:200]})") from None
    try:
        header = json.loads(str(arrays.pop("meta")))
    except (KeyError, ValueError, RecursionError):
        header = None
    if not isinstance(header, dict):
        raise GpunetError(f"{path}: not a gpunet {kind} file (no metadata)") from None
    formats = FORMATS[header["kind"] if header.get("kind") in ("model", "checkpoint") else kind]
    if header.get("format") not in formats or isinstance(header.get("format"), bool):
        raise GpunetError(f"{path}: file format {_short(header.get('format'))} is not "
                          f"{' or '.join(map(str, formats))}; "
                          f"it was written by another gpunet version ({_short(header.get('gpunet'))})")
    if header.get("kind") != kind:
        other = header.get("kind") if header.get("kind") in ("model", "checkpoint") else _short(header.get("kind"))
        raise GpunetError(f"{path}: this is a gpunet {other} file, not a {kind} file")
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise GpunetError(f"{path}: damaged {kind} file: array {name!r} holds NaN or infinite values")
    return arrays, header
