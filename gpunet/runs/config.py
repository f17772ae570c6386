"""Training configs: TOML files, checked key by key before any work starts. The recipes are configs/NAME.toml at
the top of the repository, packaged into the wheel as gpunet/configs/ (pyproject.toml maps the folder there), so
`--config NAME` works from a clone, an editable install and a wheel alike; any other `--config` is a path.

Each key is declared once, as a field of `Config` whose metadata (`Key`) says what is allowed, how to check
it and what the command line shows for it; `gpunet train` makes its options from these fields.
"""

from __future__ import annotations

import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from gpunet.core.backend import DTYPES
from gpunet.errors import GpunetError
from gpunet.files import read_limited
from gpunet.install import CLONE, in_clone
from gpunet.core.optim import OPTIMIZERS, SCHEDULES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CONFIG = "default"  # the packaged config `gpunet train` uses without --config
MAX_EPOCHS = 1_000_000  # a run's epochs: its checkpoint's history holds one row of numbers per epoch
MAX_POINTS = 10_000  # points of a sweep's grid (checked before the grid is made)
MAX_CONFIG_BYTES = 1_000_000  # a TOML config file


@dataclass(frozen=True)
class Key:
    """How one config key is checked and offered on the command line."""

    check: Callable[[Any], Any]  # the raw value -> the normalised value, or None when it is not allowed
    allowed: str  # what is allowed, for error messages
    help: str  # the command-line option's help
    cli_type: type = str  # what the option parses: int, float, or str (then `parse` turns the text into a value)
    parse: Callable[[str], Any] = str  # raises ValueError for text it cannot read
    choices: tuple[str, ...] = ()  # a fixed set of values (offered as a choice on the command line)


def is_int(v: Any) -> bool:
    """An int and not a bool (JSON and TOML integers)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_at_least(low: int) -> Callable[[Any], Any]:
    return lambda v: v if is_int(v) and v >= low else None


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], Any]:
    return lambda v: v if v in choices else None


def _hidden(v: Any) -> list[int] | None:
    if is_int(v) and v >= 1:
        return [v]
    return list(v) if isinstance(v, list) and v and all(is_int(x) and x >= 1 for x in v) else None


def _parse_widths(text: str) -> list[int]:
    """'128' or '256,128' -> [128] or [256, 128] (ValueError for anything else)."""
    return [int(w) for w in text.split(",")]


def _parse_batch(text: str) -> int | str:
    """'full' or an integer (ValueError for anything else)."""
    return text if text == "full" else int(text)


def _key(check: Callable[[Any], Any], allowed: str, help: str, default: Any = MISSING, **cli: Any) -> Any:
    return field(default=default, metadata={"key": Key(check, allowed, help, **cli)})


@dataclass
class Config:
    hidden: list[int] = _key(_hidden, "an integer >= 1 or a non-empty list of them, e.g. 128 or [256, 128]",
                             "Hidden widths: 128, or 256,128 for two layers.", parse=_parse_widths)
    epochs: int = _key(lambda v: v if is_int(v) and 1 <= v <= MAX_EPOCHS else None,
                       f"an integer >= 1 and <= {MAX_EPOCHS:,}", "Number of passes over the training set.", cli_type=int)
    lr: float = _key(lambda v: float(v) if _is_number(v) and 0 < v < float("inf") else None, "a number > 0",
                     "Learning rate alpha.", cli_type=float)
    batch_size: int | str = _key(lambda v: v if (is_int(v) and v >= 1) or v == "full" else None,
                                 'an integer >= 1 or "full"', "Samples per step, or 'full' for full-batch descent.",
                                 parse=_parse_batch)
    optimizer: str = _key(_one_of(OPTIMIZERS), " | ".join(OPTIMIZERS), "gd (the seed's rule), momentum, or adam.",
                          "gd", choices=OPTIMIZERS)
    momentum: float = _key(lambda v: float(v) if _is_number(v) and 0 <= v < 1 else None, "a number in [0, 1)",
                           "Momentum coefficient mu (optimizer momentum).", 0.9, cli_type=float)
    schedule: str = _key(_one_of(SCHEDULES), " | ".join(SCHEDULES), "Learning-rate schedule over the run.",
                         "constant", choices=SCHEDULES)
    seed: int = _key(_int_at_least(0), "an integer >= 0", "Seed for the initial weights and the shuffles.", 0,
                     cli_type=int)
    dtype: str = _key(_one_of(DTYPES), " | ".join(DTYPES), "Float type of the arrays.", "float32", choices=DTYPES)
    limit: int = _key(_int_at_least(0), "an integer >= 0 (0 = all samples)",
                      "Train on the first N samples only (0 = all).", 0, cli_type=int)
    val_size: int = _key(_int_at_least(0), "an integer >= 0 (0 = no validation split)",
                         "Hold out N training samples for validation (stratified, the same rows on every device; "
                         "the kept model is the best epoch on them; 0 = none, keep the last epoch).", 5000,
                         cli_type=int)
    checkpoint_every: int = _key(_int_at_least(0), "an integer >= 0 (epochs between checkpoints; 0 = only at the end)",
                                 "Write checkpoint.npz every N epochs (0 = at the end).", 0, cli_type=int)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


KEYS: dict[str, Key] = {f.name: f.metadata["key"] for f in fields(Config)}


def batch_rows(batch_size: int | str, m: int) -> int:
    """The rows of one step over m samples: all of them for "full", else batch_size, at most m."""
    return m if batch_size == "full" else min(int(batch_size), m)


def parse_value(key: str, text: str) -> Any:
    """A command-line value of `key` as the config holds it, unchecked; GpunetError when it cannot be read."""
    try:
        return (KEYS[key].parse if KEYS[key].cli_type is str else KEYS[key].cli_type)(text)
    except ValueError:
        raise GpunetError(f"--{key.replace('_', '-')} {text!r}: {key} must be {KEYS[key].allowed}") from None


def parse_values(key: str, text: str) -> list[Any]:
    """A comma-separated list of values of `key` (semicolons instead when a value holds commas, e.g. hidden
    '128;256,128'), each read by `parse_value` and checked, duplicates dropped; GpunetError for a bad one."""
    texts = text.split(";" if ";" in text else ",")
    if len(texts) > MAX_POINTS:
        raise GpunetError(f"--{key.replace('_', '-')}: {len(texts):,} values, over the limit of {MAX_POINTS:,} "
                          "points of a sweep")
    values = [check_value("command line", key, parse_value(key, t.strip())) for t in texts]
    return [v for i, v in enumerate(values) if v not in values[:i]]


def check_value(source: str, key: str, value: Any) -> Any:
    """The normalised value, or a GpunetError naming the source, the key and what is allowed."""
    if key not in KEYS:
        raise GpunetError(f"{source}: unknown key {key!r}; allowed keys: {', '.join(KEYS)}")
    normalised = KEYS[key].check(value)
    if normalised is None:
        raise GpunetError(f"{source}: {key} = {value!r} is not allowed; {key} must be {KEYS[key].allowed}")
    return normalised


def packaged_configs() -> dict[str, resources.abc.Traversable]:
    """Name -> file of each packaged config, e.g. 'default', 'seed': the clone's configs/ when gpunet runs from its
    clone (an editable install does too), else the installed package's gpunet/configs/."""
    folder = CLONE / "configs" if in_clone() else resources.files("gpunet") / "configs"
    return {f.name[:-len(".toml")]: f for f in sorted(folder.iterdir(), key=lambda f: f.name)
            if f.name.endswith(".toml")}


def describe(text: str) -> str:
    """What a config's recipe is: the first sentence of the comment that opens its TOML text."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    words = " ".join(lines)
    end = words.find(". ")
    return words if end < 0 else words[:end + 1]


def read_config_text(spec: str | Path | None) -> tuple[str, str]:
    """(source, TOML text) of `spec`: a packaged name (default: 'default') or a path; GpunetError when neither."""
    name = DEFAULT_CONFIG if spec is None else str(spec)
    packaged = packaged_configs()
    if name in packaged:
        return f"{name} (packaged config)", packaged[name].read_text(encoding="utf-8")
    if not Path(name).exists():
        raise GpunetError(f"{name}: config file not found; give a TOML file's path or a packaged config: "
                          f"{', '.join(packaged)} (`gpunet configs` lists them)")
    try:
        return name, read_limited(name, MAX_CONFIG_BYTES, "config file").decode("utf-8")
    except UnicodeDecodeError:
        raise GpunetError(f"{name}: not a text file (TOML must be UTF-8)") from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read `path` (a packaged config's name or a TOML file; default 'default'), apply command-line `overrides`,
    check everything."""
    source, text = read_config_text(path)
    try:
        raw = tomllib.loads(text)
    except RecursionError:
        raise GpunetError(f"{source}: not valid TOML (nested too deeply)") from None
    except ValueError as e:  # TOMLDecodeError, or an integer over Python's 4,300 digits
        raise GpunetError(f"{source}: not valid TOML ({str(e)[:200]})") from None
    values = {k: check_value(source, k, v) for k, v in raw.items()}
    values.update({k: check_value("command line", k, v) for k, v in (overrides or {}).items() if v is not None})
    missing = [f.name for f in fields(Config) if f.name not in values and f.default is MISSING]
    if missing:
        raise GpunetError(f"{source}: missing required key(s) {', '.join(missing)}")
    return Config(**values)
