"""The IDX reader: the file format of MNIST-style datasets, raw or gzipped, checked as it is read.

IDX layout (big-endian): two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions d, then d uint32 sizes, then the data. Labels are idx1 (n,), images idx3 (n, 28, 28).
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from gpunet.errors import GpunetError
from gpunet.files import open_regular


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


def read_bytes(path: Path, size: int | None = None) -> bytes:
    """The regular file's bytes, decompressed when it ends in .gz; damage becomes a GpunetError naming the file.

    With `size`, at most size + 1 bytes are read (or decompressed), and a file holding more is refused."""
    try:
        with open_regular(path) as f, (gzip.GzipFile(fileobj=f) if path.suffix == ".gz" else f) as data:
            raw = data.read(-1 if size is None else size + 1)
    except FileNotFoundError:
        raise GpunetError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise GpunetError(f"{path}: is a directory, not a data file") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise GpunetError(f"{path}: damaged or truncated gzip file ({e}); replace it with a good copy") from None
    except OSError as e:
        raise GpunetError(f"{path}: cannot read ({e.strerror or e})") from None
    if size is not None and len(raw) > size:
        raise GpunetError(f"{path}: holds more than the {size:,} bytes this file has; replace it with a good copy")
    return raw


def read_idx(path: Path, sha256: str | None = None, size: int | None = None) -> np.ndarray:
    """Read an IDX file (raw or .gz); when `sha256` is given, the decompressed bytes must match it; when `size`
    is, reading stops after that many bytes (so a gzip bomb never expands in memory)."""
    raw = read_bytes(path, size)
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise GpunetError(f"{path}: SHA-256 of the decompressed data does not match the pinned digest; "
                          "the file is corrupt or not the canonical one, replace it")
    return parse_idx(raw, str(path))

