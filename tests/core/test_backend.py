"""The backends: their products (gemm with alpha and beta, colsum, axpy) against float64 NumPy on every device;
choosing the device: --device cuda without CuPy or without a usable GPU is one clean line, --device auto falls
back to the cpu and says so; two backends of the same device and dtype are equal."""

import sys
import types

import numpy as np
import pytest

from gpunet.core.backend import get_backend
from helpers import assert_clean_error, cli
from devices.strict import StrictBackend


@pytest.mark.parametrize("beta", [0.0, 0.9])
@pytest.mark.parametrize("transpose", [False, True])
def test_products_match_numpy(backend, rng, beta, transpose):
    """out := A @ B + beta out, with A given as a transposed view as the backward pass does (A_{l-1}.T)."""
    A = rng.standard_normal((7, 5)) if not transpose else rng.standard_normal((5, 7))
    B, out0, ones = rng.standard_normal((5, 3)), rng.standard_normal((7, 3)), np.ones(7)
    Ad = backend.asarray(A).T if transpose else backend.asarray(A)
    Am = A.T if transpose else A
    out = backend.asarray(out0)
    backend.gemm(Ad, backend.asarray(B), out, beta=beta)
    np.testing.assert_allclose(backend.to_numpy(out), Am @ B + beta * out0, rtol=1e-5, atol=1e-5)
    col0 = rng.standard_normal(3)
    col = backend.asarray(col0)
    backend.colsum(backend.asarray(out0), backend.asarray(ones), col, beta=beta)
    np.testing.assert_allclose(backend.to_numpy(col), out0.sum(axis=0) + beta * col0, rtol=1e-5, atol=1e-5)
    y = backend.asarray(out0)
    backend.axpy(-0.25, backend.asarray(B[:1].repeat(7, axis=0)), y, backend.xp.empty_like(y))
    np.testing.assert_allclose(backend.to_numpy(y), out0 - 0.25 * B[:1], rtol=1e-5, atol=1e-5)


def test_cuda_without_cupy_is_one_clean_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail as if it were not installed
    result = cli("train", "--device", "cuda", "--epochs", "1", "--out", tmp_path / "r")
    assert_clean_error(result, "CuPy is not installed", "pip install")
    assert not (tmp_path / "r").exists()


def test_cuda_without_a_usable_gpu_is_one_clean_line(monkeypatch, tmp_path):
    cupy = types.ModuleType("cupy")  # CuPy installed, but no device or driver
    cupy.is_available = lambda: False
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    result = cli("train", "--device", "cuda", "--epochs", "1", "--out", tmp_path / "r")
    assert_clean_error(result, "no usable CUDA GPU", "--device cpu")


def test_auto_falls_back_to_cpu_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cupy", None)
    result = cli("train", "--epochs", "1", "--limit", "200", "--no-plots", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "--device auto chose cpu" in result.stderr


def test_backends_compare_by_device_and_dtype():
    assert get_backend("cpu") == get_backend("cpu") and len({get_backend("cpu"), get_backend("cpu")}) == 1
    assert get_backend("cpu") != get_backend("cpu", "float64")
    assert get_backend("cpu") != StrictBackend() and StrictBackend() == StrictBackend()


def test_to_floats_reads_scalars_back_at_once(backend):
    """An epoch's loss (float), count (int64) and a nan come back as Python floats, exact to float64."""
    xp = backend.xp
    loss, count = np.float32(0.1234567), 987
    got = backend.to_floats([backend.asarray(loss), backend.asarray(count, dtype=xp.int64) / 1000,
                             backend.asarray(np.nan)])
    assert all(type(v) is float for v in got)
    assert got[:2] == [float(np.asarray(loss, backend.dtype)), 0.987] and np.isnan(got[2])


def test_to_floats_is_one_device_read():
    strict = StrictBackend()
    values = [strict.asarray(np.float32(v)) for v in (1.5, 2.5, 3.5)]
    gets, syncs = strict.ledger.gets, strict.ledger.syncs
    assert strict.to_floats(values) == [1.5, 2.5, 3.5]
    assert (strict.ledger.gets - gets, strict.ledger.syncs - syncs, strict.ledger.refused) == (1, 0, [])
