"""Shared fixtures: a `backend` parametrised over cpu and cuda (cuda marked `gpu`, skipped without a GPU), the
bundled MNIST loaded once, one trained run shared by every test that only needs *a* run, and the tiny IDX
dataset of the data tests. Helper functions live in helpers.py."""

import gzip
import hashlib

import numpy as np
import pytest

from gpunet.core.backend import get_backend
from gpunet.data.load import load_mnist
from gpunet.data.datasets import DataFile
from gpunet.errors import GpunetError
from helpers import cli, idx_bytes


def cuda_or_skip(dtype: str = "float32"):
    try:
        return get_backend("cuda", dtype)
    except GpunetError as e:
        pytest.skip(f"no usable CUDA device: {e}")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def backend(request):
    """A float32 backend for each device."""
    return get_backend("cpu") if request.param == "cpu" else cuda_or_skip()


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def backend64(request):
    """A float64 backend for each device (gradient checks)."""
    return get_backend("cpu", "float64") if request.param == "cpu" else cuda_or_skip("float64")


@pytest.fixture
def gpu():
    """The float32 cuda backend, or a skip (use with @pytest.mark.gpu)."""
    return cuda_or_skip()


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
