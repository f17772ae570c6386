"""Choosing the device: --device cuda without CuPy or without a usable GPU is one clean line, --device auto falls
back to the cpu and says so."""

import sys
import types

from helpers import assert_clean_error, cli


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
