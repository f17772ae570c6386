"""Where a dataset's files are on this machine: the search path, and the checked copies found on it.

A dataset is looked for in these folders, in order; the first whose four files all match the SHA-256 of
their decompressed bytes wins, and a damaged copy on the way is reported with its path and skipped:
  1. `--data-dir DIR`: DIR/<name>/ when it exists, else DIR itself;
  2. `$GPUNET_DATA`, read the same way: a root holding one folder per dataset, or one dataset's folder;
  3. the repository's `data/<name>/` (MNIST ships there), when gpunet runs from its clone;
  4. the user cache `$XDG_CACHE_HOME/gpunet/<name>/` (default ~/.cache/gpunet/<name>/), where downloads go;
  5. system copies, such as Debian's `dataset-fashion-mnist` in /usr/share/datasets/fashion-mnist/.
Each file may be gzipped (`<file>.gz`, looked for first) or raw (`<file>`). Datasets share file names (MNIST and
Fashion-MNIST both have train-images-idx3-ubyte, ...), so a folder is known by its content: the SHA-256 of its
label files says which dataset it holds, and a folder holding another dataset is passed over, never called a
damaged copy of this one.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from gpunet.data.datasets import DATASETS, SPLIT_PREFIXES, DataFile, Dataset, Split, get_dataset
from gpunet.errors import GpunetError
from gpunet.data.idx import read_bytes, read_idx
from gpunet.install import CLONE, in_clone


def repo_data() -> Path | None:
    """The clone's data/ folder; None when gpunet is installed (then the folder above it is site-packages)."""
    return CLONE / "data" if in_clone() else None


def file_path(folder: Path, f: DataFile) -> Path | None:
    """`<file>.gz` or the raw `<file>` inside `folder`, whichever exists first."""
    for p in (folder / f"{f.name}.gz", folder / f.name):
        if p.is_file():
            return p
    return None


def holder(folder: Path) -> str | None:
    """The dataset whose label files `folder` holds, known by their SHA-256; None when none of them matches."""
    digests: dict[Path, str | None] = {}
    for ds in DATASETS.values():
        for f in ds.files:
            path = file_path(folder, f) if "labels" in f.name else None
            if path is not None and path not in digests:
                try:
                    digests[path] = hashlib.sha256(read_bytes(path, f.size)).hexdigest()
                except GpunetError:
                    digests[path] = None
            if path is not None and digests[path] == f.sha256:
                return ds.name
    return None


def read_copy(ds: Dataset, folder: Path) -> tuple[Split, ...]:
    """The splits whose files `ds` lists, from `folder` ((train, test) for a registry entry), every file checked
    against `ds`'s digests; a problem names the file."""
    arrays = {}
    for f in ds.files:
        path = file_path(folder, f)
        if path is None:
            raise GpunetError(f"{folder / (f.name + '.gz')}: file not found (this copy of {ds.name} is incomplete)")
        arrays[f.name] = (path, read_idx(path, f.sha256, f.size))
    splits = []
    for prefix in (p for p in SPLIT_PREFIXES if f"{p}-images-idx3-ubyte" in arrays):
        (ipath, images), (lpath, labels) = arrays[f"{prefix}-images-idx3-ubyte"], arrays[f"{prefix}-labels-idx1-ubyte"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise GpunetError(f"{ipath}: shape {images.shape} does not pair with {lpath} of shape {labels.shape}")
        if labels.size and labels.max() >= len(ds.classes):
            raise GpunetError(f"{lpath}: label {int(labels.max())} is out of range 0..{len(ds.classes) - 1}")
        splits.append(Split(images, labels))
    return tuple(splits)


def cache_dir(name: str) -> Path:
    """$XDG_CACHE_HOME/gpunet/<name> (an absolute $XDG_CACHE_HOME only, as the XDG spec says), else ~/.cache/..."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return root / "gpunet" / name


def dataset_folder(d: Path, ds: Dataset) -> Path:
    """`d`/<name> when that folder exists (`d` is a root holding one folder per dataset), else `d` itself."""
    return d / ds.name if (d / ds.name).is_dir() else d


def search_path(ds: Dataset, data_dir: Path | None = None) -> list[tuple[str, Path]]:
    """(where, folder) pairs in the order they are tried (see the module docstring)."""
    places = []
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        if not d.is_dir():
            raise GpunetError(f"--data-dir {d}: no such folder; give the folder that holds the {ds.name} files")
        places.append(("--data-dir", dataset_folder(d, ds)))
    if os.environ.get("GPUNET_DATA"):
        places.append(("$GPUNET_DATA", dataset_folder(Path(os.environ["GPUNET_DATA"]).expanduser(), ds)))
    if repo_data() is not None:
        places.append(("repository", repo_data() / ds.name))
    places.append(("cache", cache_dir(ds.name)))
    return places + [("system", d) for d in ds.system_dirs]


@dataclass
class Place:
    """One folder of the search path and what was found there."""

    where: str  # --data-dir, $GPUNET_DATA, repository, cache or system
    folder: Path
    present: bool  # holds at least one of the dataset's files (and not another dataset's)
    problem: str | None = None  # what is wrong with a present copy; None when it verified
    splits: tuple[Split, ...] | None = None  # (train, test) of a verified copy (only test for a test-only load)
    other: str | None = None  # the other dataset this folder holds (known by its label files' digests)
    partial: bool = False  # some of the files are not there (e.g. the test files alone, as `evaluate` downloads)

    def describe(self) -> str:
        absent = f"holds {self.other}" if self.other else "no files"
        state = absent if not self.present else self.problem or "verified"
        return f"{self.where} {self.folder}: {state}"


def places(ds: Dataset, data_dir: Path | None = None) -> Iterator[Place]:
    """Every folder of the search path, in order, each present copy read and verified (lazily)."""
    for where, folder in search_path(ds, data_dir):
        found = [f for f in ds.files if file_path(folder, f)]
        if not found:
            yield Place(where, folder, present=False)
            continue
        try:
            splits = read_copy(ds, folder)
        except GpunetError as e:  # a damaged copy, or another dataset's files under the same names
            other = holder(folder)
            yield (Place(where, folder, present=False, other=other) if other not in (None, ds.name)
                   else Place(where, folder, present=True, problem=str(e), partial=len(found) < len(ds.files)))
        else:
            yield Place(where, folder, present=True, splits=splits)


def locate(ds: Dataset, data_dir: Path | None = None,
           warn: Callable[[str], None] = lambda line: None) -> tuple[Place | None, list[Place]]:
    """The first verified copy on the search path (None if there is none) and the places looked at so far.

    `warn` hears of each damaged copy skipped, and of a --data-dir without the dataset."""
    seen = []
    for place in places(ds, data_dir):
        seen.append(place)
        if place.splits is not None:
            return place, seen
        if place.present:
            warn(f"warning: skipping the {ds.name} copy in {place.folder}: {place.problem}")
        elif place.where == "--data-dir":
            what = f"holds {place.other}, not {ds.name}" if place.other else f"holds no {ds.name} files"
            warn(f"warning: --data-dir {place.folder} {what}; looking further")
    return None, seen


def list_lines(data_dir: Path | None = None) -> Iterator[str]:
    """`gpunet data list`: each dataset, where it was found (verified) or that it is missing, and damaged copies."""
    for ds in DATASETS.values():
        found, seen = locate(ds, data_dir)
        head = f"{ds.name:<14} {ds.title}: {', '.join(ds.classes)}"
        if found is not None:
            yield f"{head}\n  found: {found.where} {found.folder} (verified)"
        else:
            hint = f", or {ds.system_hint}" if ds.system_hint else ""
            yield f"{head}\n  missing: run `gpunet data fetch {ds.name}`{hint}"
        yield from (f"  {'partial' if p.partial else 'damaged'}, skipped: {p.problem}"
                    for p in seen if p.present and p.problem)


def verify(names: list[str], data_dir: Path | None = None, say: Callable[[str], None] = print) -> None:
    """`gpunet data verify`: check every copy of each dataset on the search path and `say` what was found.

    Raises GpunetError when a copy is damaged, or when a dataset named on its own has no copy at all."""
    bad = []
    for name in names:
        ds = get_dataset(name)
        present = [p for p in places(ds, data_dir) if p.present]
        for p in present:
            state = "ok" if p.problem is None else "part" if p.partial else "BAD"
            say(f"{state:<4} {ds.name}: {p.where} {p.folder}"
                + (f"\n     {p.problem}" if p.problem else f" ({len(ds.files)} files match their SHA-256)"))
        bad += [str(p.folder) for p in present if p.problem and not p.partial]
        if not present:
            missing = f"{ds.name}: no copy on the search path; `gpunet data fetch {ds.name}` downloads it"
            if len(names) == 1:
                raise GpunetError(missing)
            say(f"--   {missing}")
    if bad:
        raise GpunetError(f"damaged copies in: {', '.join(bad)}; replace the files named above "
                          "(`gpunet data fetch NAME --force` downloads the cache's copy again)")

