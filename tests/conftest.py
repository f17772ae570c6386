"""Shared fixtures: a `backend` parametrised over cpu and cuda, cuda both on a real GPU (marked `gpu`, skipped
without one) and on the CuPy stand-in (`standin`); the bundled MNIST loaded once, one trained run shared by every
test that only needs *a* run, and the tiny IDX dataset of the data tests. Helper functions live in helpers.py."""

import functools
import gzip
import hashlib
import sys

import numpy as np
import pytest

from gpunet.core.backend import get_backend
from gpunet.core.devices import import_cupy
from gpunet.data.load import load_mnist
from gpunet.data.datasets import DataFile
from gpunet.errors import GpunetError
from helpers import cli, idx_bytes
from devices.cupy_standin import Cupy


@functools.lru_cache(maxsize=None)
def real_cuda() -> str | None:
    """None where the real CuPy finds a usable GPU, else why not."""
    try:
        import_cupy()
    except GpunetError as e:
        return str(e)
    return None


# The cuda device twice: "cuda" is the real CuPy on a GPU (marked `gpu`: `pytest -m gpu` runs only these, the
# proof on a GPU machine; skipped without one), "standin" the real CudaBackend on the CuPy stand-in, everywhere.
CUDA_PARAMS = [pytest.param("cuda", marks=pytest.mark.gpu), "standin"]


@pytest.fixture
def standin(monkeypatch):
    """A fresh CuPy stand-in (devices/cupy_standin.py) installed as `cupy`, `cupy.cublas` and `cupy.cuda`."""
    cupy = Cupy()
    for name, module in (("cupy", cupy), ("cupy.cublas", cupy.cublas), ("cupy.cuda", cupy.cuda)):
        monkeypatch.setitem(sys.modules, name, module)
    return cupy


def cuda_backend(request, dtype: str = "float32"):
    """The cuda backend of `request.param`: on the real GPU (or a skip), or on the stand-in."""
    if request.param == "standin":
        request.getfixturevalue("standin")
    elif real_cuda() is not None:
        pytest.skip(f"no usable CUDA device: {real_cuda()}")
    return get_backend("cuda", dtype)


@pytest.fixture(params=["cpu", *CUDA_PARAMS])
def backend(request):
    """A float32 backend for each device."""
    return get_backend("cpu") if request.param == "cpu" else cuda_backend(request)


@pytest.fixture(params=["cpu", *CUDA_PARAMS])
def backend64(request):
    """A float64 backend for each device (gradient checks)."""
    return get_backend("cpu", "float64") if request.param == "cpu" else cuda_backend(request, "float64")


@pytest.fixture(params=CUDA_PARAMS)
def gpu(request):
    """The float32 cuda backend, on the real GPU (or a skip) and on the stand-in."""
    return cuda_backend(request)


@pytest.fixture
def real_gpu():
    """The float32 cuda backend on a real GPU, or a skip: for what the stand-in cannot reach (another process).
    Mark its tests `gpu`."""
    if real_cuda() is not None:
        pytest.skip(f"no usable CUDA device: {real_cuda()}")
    return get_backend("cuda")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def mnist():
    """The bundled MNIST: (train, test) Splits, read once. Tests must not modify the arrays."""
    return load_mnist()


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """`gpunet train --device cpu --epochs 3 --limit 10000` run once, with its plots: (run directory, the
    CliRunner result). The directory is runs/20240101-000000 of a scratch folder, as `gpunet serve` looks for;
    three epochs on 10,000 digits reach ~94% and recognise a drawn 1 and 0 reliably (the browser test)."""
    out = tmp_path_factory.mktemp("trained") / "runs" / "20240101-000000"
    result = cli("train", "--device", "cpu", "--epochs", 3, "--limit", 10000, "--out", out)
    assert result.exit_code == 0, result.output
    return out, result


@pytest.fixture(scope="session")
def trained_run(trained):
    """The shared run's directory (model.npz, checkpoint.npz, metrics.json, plots). Read it, never write to it."""
    return trained[0]


@pytest.fixture(scope="session")
def tiny():
    """Small IDX files (8 train, 4 test images): raw bytes, canonical .gz bytes and their DataFile entries."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (8, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(8) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28)),
              "t10k-labels-idx1-ubyte": np.array([3, 1, 4, 1])}
    raw = {name: idx_bytes(a) for name, a in arrays.items()}
    gz = {name: gzip.compress(r, mtime=0) for name, r in raw.items()}
    files = tuple(DataFile(name, hashlib.sha256(gz[name]).hexdigest(), len(gz[name]),
                           hashlib.sha256(raw[name]).hexdigest()) for name in arrays)
    return {"raw": raw, "gz": gz, "files": files}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A private cache and no $GPUNET_DATA, so no test sees the user's copies or writes outside tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GPUNET_DATA", raising=False)
