"""Datasets in IDX files: a registry (MNIST, Fashion-MNIST), the search path, and a checked reader.

IDX layout (big-endian): two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions d, then d uint32 sizes, then the data. Labels are idx1 (n,), images idx3 (n, 28, 28).

A dataset is looked for in these folders, in order; the first whose four files all match the SHA-256 of
their decompressed bytes wins, and a damaged copy on the way is reported with its path and skipped:
  1. `--data-dir DIR`: DIR/<name>/ when it exists, else DIR itself;
  2. `$GPUNET_DATA/<name>/`: $GPUNET_DATA is a root holding one folder per dataset;
  3. the repository's `data/<name>/` (MNIST ships there);
  4. the user cache `$XDG_CACHE_HOME/gpunet/<name>/` (default ~/.cache/gpunet/<name>/), where downloads go;
  5. system copies, such as Debian's `dataset-fashion-mnist` in /usr/share/datasets/fashion-mnist/.
Each file may be gzipped (`<file>.gz`, looked for first) or raw (`<file>`).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from gpunet.errors import GpunetError

if TYPE_CHECKING:
    from rich.console import Console

REPO_DATA = Path(__file__).resolve().parent.parent / "data"
NUM_CLASSES = 10


@dataclass(frozen=True)
class DataFile:
    name: str  # e.g. "train-images-idx3-ubyte"; mirrors serve it as name + ".gz"
    gz_sha256: str  # the canonical .gz as the mirrors serve it: checks a download
    gz_size: int  # bytes of that .gz
    sha256: str  # the decompressed IDX bytes, the identity of the data: checks a copy on disk


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    classes: tuple[str, ...]  # class index -> name
    mirrors: tuple[str, ...]  # base URLs, tried in order
    files: tuple[DataFile, ...]  # train images, train labels, test images, test labels
    system_dirs: tuple[Path, ...] = ()
    system_hint: str = ""  # how to install the system copy

    def urls(self, f: DataFile) -> list[str]:
        return [f"{mirror}{f.name}.gz" for mirror in self.mirrors]


# Sources of the digests and sizes, all four cross-checked:
# - MNIST: the decompressed and mirror .gz SHA-256 from ../shared/datasets/mnist/README.md; the .gz digests and
#   sizes are also those of tensorflow-datasets' url_checksums/mnist.txt (the storage.googleapis.com mirror).
# - Fashion-MNIST: .gz SHA-256 and sizes from tensorflow-datasets' url_checksums/fashion_mnist.txt; torchvision's
#   datasets/mnist.py pins the same files by MD5 (8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd...). The
#   decompressed SHA-256 were computed from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1, whose .gz
#   are re-compressed (other gzip headers) but whose decompressed MD5s equal those other projects pin for the
#   upstream files (f4a8712d..., 9018921c..., 8181f547..., 15d48437...).
# Never yann.lecun.com: it has refused downloads for years (torchvision issues 1938, 3549, 8568).
DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset(
        name="mnist",
        title="MNIST handwritten digits",
        classes=tuple(str(d) for d in range(10)),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        files=(
            DataFile("train-images-idx3-ubyte", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                     9912422, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
            DataFile("train-labels-idx1-ubyte", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                     28881, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
            DataFile("t10k-images-idx3-ubyte", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                     1648877, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
            DataFile("t10k-labels-idx1-ubyte", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                     4542, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        ),
    ),
    Dataset(
        name="fashion-mnist",
        title="Fashion-MNIST clothing (Zalando)",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"),
        # The project's own mirror (an S3 website endpoint: plain http only; the SHA-256 pins guard the content).
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files=(
            DataFile("train-images-idx3-ubyte", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                     26421880, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            DataFile("train-labels-idx1-ubyte", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                     29515, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
            DataFile("t10k-images-idx3-ubyte", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                     4422102, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            DataFile("t10k-labels-idx1-ubyte", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                     5148, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        ),
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
        system_hint="apt-get install dataset-fashion-mnist (Debian, Ubuntu)",
    ),
)}


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise GpunetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


def class_names(dataset: str) -> list[str]:
    """Class index -> name, e.g. class_names('fashion-mnist')[9] == 'Ankle boot'."""
    return list(get_dataset(dataset).classes)


@dataclass
class Split:
    images: np.ndarray  # (n, 28, 28) uint8
    labels: np.ndarray  # (n,) uint8


def parse_idx(raw: bytes, source: str) -> np.ndarray:
    """Parse IDX bytes of unsigned bytes, checking the magic number and the size against the header."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise GpunetError(f"{source}: not an IDX file of unsigned bytes (wrong magic number {raw[:4].hex() or 'none'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise GpunetError(f"{source}: truncated IDX header ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "too long"
        raise GpunetError(f"{source}: {kind}: header says {dims} = {expected} bytes, file has {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it ends in .gz; damage becomes a GpunetError naming the file."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise GpunetError(f"{path}: file not found") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise GpunetError(f"{path}: damaged or truncated gzip file ({e}); replace it with a good copy") from None
    except OSError as e:
        raise GpunetError(f"{path}: cannot read ({e.strerror or e})") from None


def read_idx(path: Path, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (raw or .gz); when `sha256` is given, the decompressed bytes must match it."""
    raw = read_bytes(path)
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise GpunetError(f"{path}: SHA-256 of the decompressed data does not match the pinned digest; "
                          "the file is corrupt or not the canonical one, replace it")
    return parse_idx(raw, str(path))


def file_path(folder: Path, f: DataFile) -> Path | None:
    """`<file>.gz` or the raw `<file>` inside `folder`, whichever exists first."""
    for p in (folder / f"{f.name}.gz", folder / f.name):
        if p.is_file():
            return p
    return None


def read_copy(ds: Dataset, folder: Path) -> tuple[Split, Split]:
    """(train, test) from `folder`, every file checked against `ds`'s digests; a problem names the file."""
    arrays = {}
    for f in ds.files:
        path = file_path(folder, f)
        if path is None:
            raise GpunetError(f"{folder / (f.name + '.gz')}: file not found (this copy of {ds.name} is incomplete)")
        arrays[f.name] = (path, read_idx(path, f.sha256))
    splits = []
    for prefix in ("train", "t10k"):
        (ipath, images), (lpath, labels) = arrays[f"{prefix}-images-idx3-ubyte"], arrays[f"{prefix}-labels-idx1-ubyte"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise GpunetError(f"{ipath}: shape {images.shape} does not pair with {lpath} of shape {labels.shape}")
        if labels.size and labels.max() >= len(ds.classes):
            raise GpunetError(f"{lpath}: label {int(labels.max())} is out of range 0..{len(ds.classes) - 1}")
        splits.append(Split(images, labels))
    return splits[0], splits[1]


def cache_dir(name: str) -> Path:
    """$XDG_CACHE_HOME/gpunet/<name> (an absolute $XDG_CACHE_HOME only, as the XDG spec says), else ~/.cache/..."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return root / "gpunet" / name


def search_path(ds: Dataset, data_dir: Path | None = None) -> list[tuple[str, Path]]:
    """(where, folder) pairs in the order they are tried (see the module docstring)."""
    places = []
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        if not d.is_dir():
            raise GpunetError(f"--data-dir {d}: no such folder; give the folder that holds the {ds.name} files")
        places.append(("--data-dir", d / ds.name if (d / ds.name).is_dir() else d))
    if os.environ.get("GPUNET_DATA"):
        places.append(("$GPUNET_DATA", Path(os.environ["GPUNET_DATA"]).expanduser() / ds.name))
    places += [("repository", REPO_DATA / ds.name), ("cache", cache_dir(ds.name))]
    return places + [("system", d) for d in ds.system_dirs]


@dataclass
class Place:
    """One folder of the search path and what was found there."""

    where: str  # --data-dir, $GPUNET_DATA, repository, cache or system
    folder: Path
    present: bool  # holds at least one of the dataset's files
    problem: str | None = None  # what is wrong with a present copy; None when it verified
    splits: tuple[Split, Split] | None = None  # (train, test) of a verified copy

    def describe(self) -> str:
        state = "no files" if not self.present else self.problem or "verified"
        return f"{self.where} {self.folder}: {state}"


def places(ds: Dataset, data_dir: Path | None = None) -> Iterator[Place]:
    """Every folder of the search path, in order, each present copy read and verified (lazily)."""
    for where, folder in search_path(ds, data_dir):
        if not any(file_path(folder, f) for f in ds.files):
            yield Place(where, folder, present=False)
            continue
        try:
            yield Place(where, folder, present=True, splits=read_copy(ds, folder))
        except GpunetError as e:
            yield Place(where, folder, present=True, problem=str(e))


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
            warn(f"warning: --data-dir {place.folder} holds no {ds.name} files; looking further")
    return None, seen


def load_dataset(name: str, data_dir: Path | None = None, console: Console | None = None) -> tuple[Split, Split]:
    """(train, test) of dataset `name` from the first verified copy on the search path; when there is none,
    download it into the cache (see gpunet.fetch). Nothing found and no download: GpunetError saying where it
    looked and what to run."""
    from rich.console import Console

    from gpunet.fetch import fetch

    ds = get_dataset(name)
    console = console or Console(stderr=True)
    say = functools.partial(console.print, markup=False, highlight=False)
    found, seen = locate(ds, data_dir, say)
    if found is not None:
        say(f"{ds.name}: {found.folder} ({found.where} copy, verified)")
        return found.splits
    say(f"{ds.name}: no verified copy on this machine; downloading it into {cache_dir(ds.name)}")
    try:
        folder = fetch(ds, console=console)
    except GpunetError as e:
        looked = "\n".join(f"  {p.describe()}" for p in seen)
        hint = f"\nA system copy is another way: {ds.system_hint}" if ds.system_hint else ""
        raise GpunetError(f"{ds.name} is not on this machine and could not be downloaded. Looked in:\n{looked}"
                          f"{hint}\n{e}") from None
    return read_copy(ds, folder)


def load_mnist(directory: Path | None = None) -> tuple[Split, Split]:
    """(train, test) of MNIST: from `directory` first when given, else the search path (the bundled data/mnist)."""
    return load_dataset("mnist", directory)


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
        yield from (f"  damaged, skipped: {p.problem}" for p in seen if p.present and p.problem)


def verify(names: list[str], data_dir: Path | None = None, say: Callable[[str], None] = print) -> None:
    """`gpunet data verify`: check every copy of each dataset on the search path and `say` what was found.

    Raises GpunetError when a copy is damaged, or when a dataset named on its own has no copy at all."""
    bad = []
    for name in names:
        ds = get_dataset(name)
        present = [p for p in places(ds, data_dir) if p.present]
        for p in present:
            say(f"{'ok' if p.problem is None else 'BAD':<4} {ds.name}: {p.where} {p.folder}"
                + (f"\n     {p.problem}" if p.problem else f" ({len(ds.files)} files match their SHA-256)"))
        bad += [str(p.folder) for p in present if p.problem]
        if not present:
            missing = f"{ds.name}: no copy on the search path; `gpunet data fetch {ds.name}` downloads it"
            if len(names) == 1:
                raise GpunetError(missing)
            say(f"--   {missing}")
    if bad:
        raise GpunetError(f"damaged copies in: {', '.join(bad)}; replace the files named above "
                          "(`gpunet data fetch NAME --force` downloads the cache's copy again)")


def to_features(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) uint8 -> (n, 784) float32 in [0, 1] (on the host)."""
    X = images.reshape(len(images), -1).astype(np.float32)
    X /= 255  # in place: no second 188 MB array for the training set
    return X
