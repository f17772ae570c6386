"""MNIST from IDX files: a checked reader and the bundled copy in `data/mnist/`.

IDX layout (big-endian): two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions d, then d uint32 sizes, then the data. Labels are idx1 (n,), images idx3 (n, 28, 28).
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpunet.errors import GpunetError

REPO_DATA = Path(__file__).resolve().parent.parent / "data"

# SHA-256 of the decompressed IDX files, from ../shared/datasets/mnist/README.md (they match the
# digests other projects pin for MNIST).
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
NUM_CLASSES = 10


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


def find_file(directory: Path, stem: str) -> Path:
    """`stem.gz` or the raw `stem` inside `directory`."""
    for p in (directory / f"{stem}.gz", directory / stem):
        if p.exists():
            return p
    raise GpunetError(f"{directory / (stem + '.gz')}: file not found; the repository ships it in data/mnist/ "
                      "(restore it with `git checkout -- data/mnist`)")


def load_split(directory: Path, prefix: str) -> Split:
    """Load `train` or `t10k` images and labels from `directory`, verified against the pinned digests."""
    files = {}
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        stem = f"{prefix}-{kind}"
        path = find_file(directory, stem)
        files[kind] = (path, read_idx(path, MNIST_SHA256.get(stem)))
    (ipath, images), (lpath, labels) = files["images-idx3-ubyte"], files["labels-idx1-ubyte"]
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise GpunetError(f"{ipath}: shape {images.shape} does not pair with {lpath} of shape {labels.shape}")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise GpunetError(f"{lpath}: label {int(labels.max())} is out of range 0..{NUM_CLASSES - 1}")
    return Split(images, labels)


def load_mnist(directory: Path | None = None) -> tuple[Split, Split]:
    """(train, test) from `directory` (default: the repository's data/mnist)."""
    directory = REPO_DATA / "mnist" if directory is None else Path(directory)
    return load_split(directory, "train"), load_split(directory, "t10k")


def to_features(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) uint8 -> (n, 784) float32 in [0, 1] (on the host)."""
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
