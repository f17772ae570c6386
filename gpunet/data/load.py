"""Datasets as the rest of gpunet uses them: loaded from the search path (downloaded when missing), as
features on the host, and copied once to the device."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console

from gpunet.core.backend import Backend
from gpunet.data.datasets import NUM_CLASSES, TEST_PREFIX, Dataset, Split, get_dataset
from gpunet.errors import GpunetError
from gpunet.data.fetch import fetch
from gpunet.data.locate import cache_dir, locate, read_copy
from gpunet.core.model import one_hot


def load_dataset(name: str, data_dir: Path | None = None, console: Console | None = None) -> tuple[Split, Split]:
    """(train, test) of dataset `name` from the first verified copy on the search path; when there is none,
    download it into the cache (see gpunet.data.fetch). Nothing found and no download: GpunetError saying where it
    looked and what to do. Silent unless given a `console` (the CLI's), which hears where the data came from,
    the copies skipped and the download's progress."""
    train, test = load_files(get_dataset(name), data_dir, console)
    return train, test


def load_test(name: str, data_dir: Path | None = None, console: Console | None = None) -> Split:
    """The test split of dataset `name`, as `load_dataset` finds it, but needing only the two test files: a copy
    without the training files will do, and a download fetches the test files alone."""
    ds = get_dataset(name)
    (test,) = load_files(replace(ds, files=tuple(f for f in ds.files if f.name.startswith(TEST_PREFIX))),
                         data_dir, console)
    return test


def load_files(ds: Dataset, data_dir: Path | None, console: Console | None) -> tuple[Split, ...]:
    """The splits of the files `ds` lists, found or downloaded (see `load_dataset`)."""
    say = functools.partial(console.print, markup=False, highlight=False) if console is not None else lambda line: None
    found, seen = locate(ds, data_dir, say)
    if found is not None:
        say(f"{ds.name}: {found.folder} ({found.where} copy, verified)")
        return found.splits
    say(f"{ds.name}: no verified copy on this machine; downloading {', '.join(f.name for f in ds.files)} into "
        f"{cache_dir(ds.name)}")
    try:
        folder = fetch(ds, console=console)
    except GpunetError as e:
        looked = "\n".join(f"  {p.describe()}" for p in seen)
        hint = f"\nA system copy is another way: {ds.system_hint}" if ds.system_hint else ""
        raise GpunetError(f"{ds.name} is not on this machine and could not be downloaded. Looked in:\n{looked}"
                          f"{hint}\n{e}\nTo get it: run `gpunet data fetch {ds.name}` once online, or point gpunet "
                          f"at a copy with --data-dir DIR or $GPUNET_DATA (a folder holding {ds.name}/ or its files).") from None
    return read_copy(ds, folder)


def load_mnist(directory: Path | None = None, console: Console | None = None) -> tuple[Split, Split]:
    """(train, test) of MNIST: from `directory` first when given, else the search path (the clone's data/mnist,
    the cache, ...); silent unless given a `console`."""
    return load_dataset("mnist", directory, console)


def to_features(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) uint8 -> (n, 784) float32 in [0, 1] (on the host)."""
    X = images.reshape(len(images), -1).astype(np.float32)
    X /= 255  # in place: no second 188 MB array for the training set
    return X


class DeviceData:
    """Features, labels and one-hot targets of one split, copied to the device once."""

    def __init__(self, backend: Backend, split: Split, limit: int = 0):
        n = len(split.labels) if limit == 0 else min(limit, len(split.labels))
        self.m = n
        self.X = backend.asarray(to_features(split.images[:n]))  # (m, 784)
        self.y = backend.asarray(split.labels[:n], dtype=np.int32)  # (m,)
        self.Y = one_hot(backend.xp, self.y, NUM_CLASSES, backend.dtype)  # (m, 10)
