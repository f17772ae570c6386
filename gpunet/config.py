"""Training configs: TOML files in configs/, checked key by key before any work starts."""

from __future__ import annotations

import sys
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from gpunet.backend import DTYPES
from gpunet.errors import GpunetError
from gpunet.optim import OPTIMIZERS, SCHEDULES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.toml"


@dataclass
class Config:
    hidden: list[int]  # widths of the hidden layers, e.g. [128]
    epochs: int
    lr: float
    batch_size: int | str  # a positive int, or "full" for full-batch gradient descent
    optimizer: str = "gd"
    momentum: float = 0.9
    schedule: str = "constant"
    seed: int = 0
    dtype: str = "float32"
    limit: int = 0  # train on the first `limit` samples; 0 = all
    checkpoint_every: int = 0  # write checkpoint.npz every N epochs; 0 = only at the end (and on Ctrl-C)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# key -> (check, what is allowed). Each check takes the raw value and returns it normalised or None.
CHECKS: dict[str, tuple[Any, str]] = {
    "hidden": (lambda v: [v] if _is_int(v) and v >= 1 else
               (list(v) if isinstance(v, list) and v and all(_is_int(x) and x >= 1 for x in v) else None),
               "an integer >= 1 or a non-empty list of them, e.g. 128 or [256, 128]"),
    "epochs": (lambda v: v if _is_int(v) and v >= 1 else None, "an integer >= 1"),
    "lr": (lambda v: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf")
           else None, "a number > 0"),
    "batch_size": (lambda v: v if (_is_int(v) and v >= 1) or v == "full" else None,
                   'an integer >= 1 or "full"'),
    "optimizer": (lambda v: v if v in OPTIMIZERS else None, " | ".join(OPTIMIZERS)),
    "momentum": (lambda v: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1
                 else None, "a number in [0, 1)"),
    "schedule": (lambda v: v if v in SCHEDULES else None, " | ".join(SCHEDULES)),
    "seed": (lambda v: v if _is_int(v) and v >= 0 else None, "an integer >= 0"),
    "dtype": (lambda v: v if v in DTYPES else None, " | ".join(DTYPES)),
    "limit": (lambda v: v if _is_int(v) and v >= 0 else None, "an integer >= 0 (0 = all samples)"),
    "checkpoint_every": (lambda v: v if _is_int(v) and v >= 0 else None,
                         "an integer >= 0 (epochs between checkpoints; 0 = only at the end)"),
}


def check_value(source: str, key: str, value: Any) -> Any:
    """The normalised value, or a GpunetError naming the source, the key and what is allowed."""
    if key not in CHECKS:
        raise GpunetError(f"{source}: unknown key {key!r}; allowed keys: {', '.join(CHECKS)}")
    check, allowed = CHECKS[key]
    normalised = check(value)
    if normalised is None:
        raise GpunetError(f"{source}: {key} = {value!r} is not allowed; {key} must be {allowed}")
    return normalised


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read `path` (default configs/default.toml), apply command-line `overrides`, check everything."""
    path = DEFAULT_CONFIG if path is None else Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise GpunetError(f"{path}: config file not found") from None
    except UnicodeDecodeError:
        raise GpunetError(f"{path}: not a text file (TOML must be UTF-8)") from None
    except tomllib.TOMLDecodeError as e:
        raise GpunetError(f"{path}: not valid TOML ({e})") from None
    except OSError as e:
        raise GpunetError(f"{path}: cannot read ({e.strerror or e})") from None
    values = {k: check_value(str(path), k, v) for k, v in raw.items()}
    values.update({k: check_value("command line", k, v) for k, v in (overrides or {}).items() if v is not None})
    missing = [f.name for f in fields(Config) if f.name not in values and f.default is MISSING]
    if missing:
        raise GpunetError(f"{path}: missing required key(s) {', '.join(missing)}")
    return Config(**values)
