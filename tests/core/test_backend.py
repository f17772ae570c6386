"""The backends: their products (gemm with alpha and beta, colsum, axpy) against float64 NumPy on every device;
choosing the device: --device cuda without CuPy or without a usable GPU is one clean line, --device auto falls
back to the cpu and says so; two backends of the same device and dtype are equal."""

import sys

import numpy as np
import pytest

from gpunet.core.backend import CudaBackend, get_backend
from gpunet.core.devices import compute_capability, cuda_status
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


def test_cuda_without_a_usable_gpu_is_one_clean_line(standin, monkeypatch, tmp_path):
    monkeypatch.setattr(standin, "is_available", lambda: False)  # CuPy installed, but no device or driver
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


class NoCublas:
    """A finder that fails `import cupy.cublas` as CuPy 14 does without its ctk extra (cuBLAS not installed)."""

    def find_spec(self, name, path=None, target=None):
        if name == "cupy.cublas":
            raise ImportError('CuPy failed to load libcublasLt.so.12: Failure finding "libcublasLt.so.12"')
        return None


@pytest.fixture
def no_cublas(standin, monkeypatch):
    """CuPy that imports and sees a GPU, but whose cupy.cublas cannot load cuBLAS."""
    monkeypatch.delitem(sys.modules, "cupy.cublas")
    monkeypatch.setattr(sys, "meta_path", [NoCublas(), *sys.meta_path])


def test_auto_without_cublas_runs_on_the_cpu_and_says_why_in_one_line(no_cublas, tmp_path):
    result = cli("train", "--epochs", "1", "--limit", "200", "--no-plots", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    why = [line for line in result.stderr.splitlines() if "libcublasLt" in line]
    assert len(why) == 1 and why[0].startswith("--device auto: using the cpu") and "pip install" in why[0]
    assert "Traceback" not in result.output and "--device auto chose cpu" in result.stderr


def test_cuda_without_cublas_is_the_install_hint(no_cublas, tmp_path):
    result = cli("train", "--device", "cuda", "--epochs", "1", "--out", tmp_path / "r")
    assert_clean_error(result, "CuPy is installed but failed to import", "libcublasLt", "pip install")
    assert not (tmp_path / "r").exists()


def test_auto_without_cupy_says_nothing_more(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert get_backend("auto").name == "cpu" and capsys.readouterr().err == ""


def test_the_stand_in_runs_the_real_cuda_backend(standin):
    """`get_backend("cuda")` on the stand-in is gpunet's CudaBackend itself, describing the stand-in's GPU with
    the compute capability as major.minor (CuPy gives the digits "90")."""
    b = get_backend("cuda")
    assert type(b) is CudaBackend and b.xp is standin and b.cublas is standin.cublas
    assert b.describe() == "cuda (CuPy stand-in (NumPy), CuPy 14.2.0, float32)"
    assert b.versions()["cupy"] == "14.2.0"
    assert b.hardware()["gpu"] == "CuPy stand-in (NumPy), 16.0 GiB (15.0 free), compute capability 9.0"
    assert b.hardware()["cuda"] == "runtime 12.9, driver supports 12.8"
    assert compute_capability("120") == "12.0"
    assert "compute capability 9.0" in cuda_status()


def test_colsum_updates_its_output_in_place_through_gemv(standin, rng):
    """CuPy's gemv(transa, alpha, a, x, beta, y) returns None and writes y; colsum returns that y. With
    beta = 0 the old contents (NaN here) are not read."""
    b = get_backend("cuda", "float64")
    M = rng.standard_normal((6, 4))
    out = b.asarray(np.full(4, np.nan))
    got = b.colsum(b.asarray(M), b.asarray(np.ones(6)), out)
    assert got is out
    np.testing.assert_allclose(b.to_numpy(out), M.sum(axis=0))


def test_a_capture_that_raises_ends_the_capture(standin):
    """CudaBackend.capture ends the stream's capture when `fn` raises, so the device is usable again."""
    b = get_backend("cuda")
    x = b.asarray(np.ones(3))

    def broken():
        x.__imul__(2)
        raise ValueError("in the captured function")

    with pytest.raises(ValueError, match="captured function"):
        b.capture(broken)
    assert standin.ledger.tape is None and standin.cuda.get_current_stream() is standin.cuda.streams[0]
    replay = b.capture(lambda: x.__imul__(3))
    replay()
    np.testing.assert_array_equal(b.to_numpy(x), [3, 3, 3])
