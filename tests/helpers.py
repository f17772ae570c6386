"""Helpers shared by the test files: the CLI through CliRunner, clean-error checks, IDX bytes, small batches and
the pieces of a tiny dataset served or placed by the tests."""

import gzip
import io
import socket
import struct
from typing import Callable

import numpy as np
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from gpunet.core.backend import get_backend
from gpunet.apps.cli import app
from gpunet.data.datasets import DATASETS, Dataset

CPU64 = get_backend("cpu", "float64")
PLOTS = ("curves.png", "confusion.png", "predictions.png", "mistakes.png", "weights.png")
runner = CliRunner()


def cli(*args):
    """`gpunet ARGS...` through typer's CliRunner (arguments may be paths or numbers)."""
    return runner.invoke(app, [str(a) for a in args])


def assert_point_files(run_dir, curves=True):
    """A sweep point's run directory holds metrics.json, model.npz, checkpoint.npz and, with `curves`, a drawn
    curves.png (nothing else)."""
    names = {"metrics.json", "model.npz", "checkpoint.npz"} | ({"curves.png"} if curves else set())
    assert {p.name for p in run_dir.iterdir()} == names, run_dir
    if curves:
        with Image.open(run_dir / "curves.png") as image:
            assert image.format == "PNG" and image.width >= 300 and np.asarray(image.convert("L")).std() > 10


def assert_clean_error(result, *fragments):
    """Exit 2, no traceback, and one `error:` line on stderr holding every fragment."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and result.stderr.count("error: ") == 1, result.stderr
    for f in fragments:
        assert f in line, line


def batch(rng, m=16, n_in=784):
    """A random batch: X (m, n_in) in [0, 1), one-hot Y (m, 10), float64."""
    X = rng.random((m, n_in))
    y = rng.integers(0, 10, m)
    return X, np.eye(10)[y]


def idx_bytes(array: np.ndarray) -> bytes:
    """`array` as an uncompressed IDX file of unsigned bytes."""
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


def corrupt(data: bytes) -> bytes:
    """Same length, one byte changed."""
    return data[:-20] + bytes([data[-20] ^ 0xFF]) + data[-19:]


def register(monkeypatch, tiny, mirrors, name="tiny"):
    """A registry entry `name` for the tiny files, downloaded from `mirrors`, with no system copy."""
    ds = Dataset(name=name, title="tiny test set", classes=tuple("abcdefghij"), mirrors=tuple(mirrors),
                 files=tiny["files"])
    monkeypatch.setitem(DATASETS, name, ds)
    return ds


def place(folder, tiny, damage=None):
    """Write the tiny .gz files into `folder`; `damage(name, raw) -> bytes` may alter a file's raw content."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in tiny["raw"].items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(damage(name, raw) if damage else raw))
    return folder


def quiet():
    """A console that writes to a string (read it back with .file.getvalue())."""
    return Console(file=io.StringIO(), width=300)


def closed_port() -> int:
    """A local port with nothing listening: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mutate(data: bytes, rng: np.random.Generator, header_at: Callable[[bytes], list[int]]) -> bytes:
    """One random damage of `data`: flipped bits, a truncation, an insertion, a deletion, or 4 random bytes at one
    of the offsets `header_at(data)` names (where a format's parser reads sizes and types)."""
    b = bytearray(data)
    kind = rng.integers(5)
    if kind == 0:
        for i in rng.integers(0, len(b), rng.integers(1, 9)):
            b[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        b = b[:rng.integers(0, len(b))]
    elif kind == 2:
        at = int(rng.integers(0, len(b)))
        b[at:at] = rng.bytes(int(rng.integers(1, 64)))
    elif kind == 3:
        at = int(rng.integers(0, len(b)))
        del b[at:at + int(rng.integers(1, 64))]
    else:
        at = int(rng.choice(header_at(data)))
        b[at:at + 4] = rng.bytes(4)
    return bytes(b)
